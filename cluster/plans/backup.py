"""Backup and restore, pure: which manager may stop its engine for a copy of the swarm state, and the
operations that dump, fetch, upload and load each piece.

The swarm state is taken as Docker's admin guide says: stop the engine on one manager (never the
leader, and only while the others keep quorum), copy the whole /var/lib/docker/swarm, start it again.
Workload data is dumped and loaded by commands its bundle declares, run in the service's container.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import SwarmlabError
from cluster.facts import NODES_COMMAND, NodeFacts
from cluster.operations import Fetch, Plan, Run, Wait, Write
from cluster.plans.recover import manager_ready_verdict
from cluster.workload import BackupSpec

REMOTE_DIR = "/root/.swarmlab/backup"
SWARM_PARENT = "/var/lib/docker"
ENGINE_STOP_TIMEOUT = 60
RETURN_TIMEOUT = 180
SYSTEMD_COMMAND = "test -d /run/systemd/system && echo yes || echo no"


class BackupRefused(SwarmlabError):
    """The backup cannot be taken safely now; nothing was changed."""


def engine_commands(systemd: bool) -> tuple[str, str]:
    """Stop and start the Docker engine: systemd on a VM; the lab's nodes run dockerd from their init
    script, so there it is signalled (and waited for) and started again detached from the SSH session."""
    if systemd:
        return "systemctl stop docker.socket 2>/dev/null; systemctl stop docker.service", "systemctl start docker"
    stop = (
        f'pid=$(cat /var/run/docker.pid) && kill "$pid" && timeout {ENGINE_STOP_TIMEOUT} tail --pid="$pid" -f /dev/null'
    )
    return stop, "setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null"


def choose_manager(nodes: Sequence[NodeFacts]) -> NodeFacts:
    """A reachable manager that is not the leader, whose engine may stop while the others keep quorum."""
    managers = [n for n in nodes if n.role == "manager"]
    up = [n for n in managers if n.state == "ready" and n.reachability == "reachable"]
    needed = len(managers) // 2 + 1
    candidates = sorted((n for n in up if not n.leader), key=lambda n: n.hostname)
    if not candidates or len(up) - 1 < needed:
        raise BackupRefused(
            f"the swarm state is copied from a manager whose engine stops meanwhile, and {len(up)} of "
            f"{len(managers)} managers are up: stopping one (never the leader) would leave fewer than the "
            f"{needed} Raft needs. Fix: bring the managers back first (`fab status`, `fab recover`)"
        )
    return candidates[0]


def plan_swarm_backup(manager: str, leader: str, systemd: bool, local: Path, stamp: str) -> Plan:
    """Stop the engine, archive the swarm directory, start the engine whatever tar did; wait until the
    manager is back in the Raft membership; fetch the archive and remove the node's copy."""
    remote = f"{REMOTE_DIR}/{stamp}-swarm.tar.gz"
    stop, start = engine_commands(systemd)
    archive = (
        f"mkdir -p -m 700 {REMOTE_DIR} && {stop} && "
        f"{{ tar -C {SWARM_PARENT} -czf {remote} swarm; rc=$?; {start} || rc=$?; exit $rc; }}"
    )
    return Plan(
        (
            Run(manager, archive, f"swarm state archived on {manager} (engine stopped meanwhile)", changes=False),
            Wait(
                leader,
                NODES_COMMAND,
                manager_ready_verdict(manager),
                f"{manager} back as a reachable manager",
                RETURN_TIMEOUT,
                2,
            ),
            Fetch(manager, remote, local, f"swarm state saved to {local}", changes=True),
            Run(manager, f"rm -f {remote}", "the node's copy removed", changes=False),
        )
    )


def in_container(service: str, command: str, stdin: bool = False) -> str:
    """Run a bundle's command in the service's running container on this node (sh -c, quoted)."""
    return (
        f"cid=$(docker ps -q -f label=com.docker.swarm.service.name={service} | head -n1); "
        f'[ -n "$cid" ] || {{ echo "no running container of {service} on this node" >&2; exit 1; }}; '
        f'docker exec {"-i " if stdin else ""}"$cid" sh -c {shlex.quote(command)}'
    )


@dataclass(frozen=True)
class Located:
    """A bundle's backup item and where its data lives now: the service and the node of its task."""

    stack: str
    spec: BackupSpec
    service: str  # the full service name, stack_service
    node: str

    @property
    def relative(self) -> str:
        """Its file within a backup directory."""
        return f"{self.stack}/{self.spec.file}"

    def remote(self, stamp: str) -> str:
        return f"{REMOTE_DIR}/{stamp}-{self.stack}-{self.spec.file}"


def plan_data_backup(item: Located, local: Path, stamp: str) -> Plan:
    remote, what = item.remote(stamp), f"{item.stack}/{item.spec.name}"
    dump = in_container(item.service, item.spec.dump)
    return Plan(
        (
            Run(
                item.node,
                f"mkdir -p -m 700 {REMOTE_DIR} && {{ {dump}; }} > {remote}",
                f"{what} dumped from {item.service} on {item.node}",
                changes=False,
            ),
            Fetch(item.node, remote, local, f"{what} saved to {local}", changes=True),
            Run(item.node, f"rm -f {remote}", "the node's copy removed", changes=False),
        )
    )


def plan_data_restore(item: Located, content: bytes, stamp: str) -> Plan:
    """Upload the dump beside the service's task and feed it to the bundle's restore command."""
    remote = item.remote(stamp)
    load = f"{in_container(item.service, item.spec.restore, stdin=True)} < {remote}; rc=$?; rm -f {remote}; exit $rc"
    return Plan(
        (
            Run(item.node, f"mkdir -p -m 700 {REMOTE_DIR}", "a private scratch directory", changes=False),
            Write(item.node, remote, content, f"{item.spec.file} uploaded", mode=0o600),
            Run(item.node, load, f"{item.stack}/{item.spec.name} restored into {item.service} on {item.node}"),
        )
    )
