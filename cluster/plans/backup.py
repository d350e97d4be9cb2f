"""Backup and restore, pure: which manager may stop its engine for a copy of the swarm state, and the
operations that dump, fetch, upload and load each piece.

The swarm state is taken as Docker's admin guide says: stop the engine on one manager (never the
leader, and only while the others keep quorum), copy the whole /var/lib/docker/swarm, start it again.
Workload data is dumped and loaded by commands its bundle declares, run in the service's container.
Restoring the swarm state (for a cluster whose managers all lost theirs) puts the directory back on
one manager and re-forms the swarm from it. Pruning (`fab backup --keep N`) keeps a cluster's N newest
backups and never touches what is not one of them.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cluster.backups import ARCHIVE_MARK, MANIFEST, STAMP_FORMAT, BackupError, Found, archive_mark
from cluster.errors import ConfigError, SwarmlabError
from cluster.facts.swarm import LOCAL_NODE_STATE, NODES, SwarmNode
from cluster.inventory import Node
from cluster.operations import Fetch, Plan, Run, Wait, Write
from cluster.plans.recover import leader_verdict, manager_ready_verdict
from cluster.plans.swarm import TokenRole
from cluster.waiting import Verdict
from cluster.workload import BackupSpec
from topology import NODE_WORK_DIR, SWARM_DIR, SWARM_PORT

REMOTE_DIR = f"{NODE_WORK_DIR}/backup"
# tar runs in the swarm directory's parent, so the archive holds one top directory: swarm/.
SWARM_PARENT, SWARM_BASENAME = posixpath.split(SWARM_DIR)
ENGINE_STOP_TIMEOUT = 60
RETURN_TIMEOUT = 180


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


def choose_manager(nodes: Sequence[SwarmNode]) -> SwarmNode:
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


def plan_swarm_backup(manager: str, leader: str, systemd: bool, local: Path, stamp: str, *, cluster: str) -> Plan:
    """Stop the engine, archive the swarm directory with our mark beside it (backups.ARCHIVE_MARK),
    start the engine whatever tar did; wait until the manager is back in the Raft membership; fetch
    the archive and remove the node's copies."""
    remote, mark = f"{REMOTE_DIR}/{stamp}-swarm.tar.gz", f"{REMOTE_DIR}/{ARCHIVE_MARK}"
    stop, start = engine_commands(systemd)
    archive = (
        f"mkdir -p -m 700 {REMOTE_DIR} && printf %s {shlex.quote(archive_mark(cluster, stamp, manager))} > {mark} && "
        f"{stop} && {{ tar -C {SWARM_PARENT} -czf {remote} {SWARM_BASENAME} -C {REMOTE_DIR} {ARCHIVE_MARK}; "
        f"rc=$?; {start} || rc=$?; exit $rc; }}"
    )
    return Plan(
        (
            Run(manager, archive, f"swarm state archived on {manager} (engine stopped meanwhile)", changes=False),
            Wait(
                leader,
                NODES.command,
                manager_ready_verdict(manager),
                f"{manager} back as a reachable manager",
                RETURN_TIMEOUT,
                2,
            ),
            Fetch(manager, remote, local, f"swarm state saved to {local}", changes=True),
            Run(manager, f"rm -f {remote} {mark}", "the node's copy removed", changes=False),
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


# --- where a backup goes: this cluster's, or another's data into this one -----------------------------------


def restore_origin(backup_cluster: str, cluster: str) -> str:
    """What a data restore says first: which cluster the backup was taken on, and which it goes into."""
    if backup_cluster == cluster:
        return f"restoring a backup of cluster {cluster} into the same cluster"
    return f"restoring a backup of cluster {backup_cluster} into cluster {cluster}"


def check_stacks_deployed(stacks: Sequence[str], deployed: Collection[str], cluster: str) -> None:
    """Data is loaded into a running stack's services, matched by stack and item name: a stack the
    backup holds that this cluster does not run is refused (every one named) before anything changes."""
    missing = sorted(set(stacks) - set(deployed))
    if missing:
        fixes = "; ".join(f"`fab deploy-stack --stack {name}`" for name in missing)
        raise BackupError(
            f"the backup holds data of stack {', '.join(missing)}, which is not deployed on cluster {cluster}; "
            f"nothing was changed. Fix: {fixes}, then restore again"
        )


def check_swarm_origin(directory: Path, backup_cluster: str, cluster: str) -> None:
    """A swarm's state restores only into the cluster it was taken from: its Raft log holds that
    cluster's node IDs, addresses, certificates and root CA, which another cluster's machines do not match."""
    if backup_cluster != cluster:
        raise BackupRefused(
            f"{directory} is a backup of cluster {backup_cluster}, and this is cluster {cluster}: a swarm's state "
            f"(its Raft log: {backup_cluster}'s node IDs, addresses, certificates and root CA) restores only into "
            f"the cluster it was taken from. Fix: to bring {backup_cluster}'s data into {cluster}, deploy its stacks "
            f"here and run `fab restore --from {directory}` without --swarm"
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


def _engine_back(output: str) -> Verdict:
    state = LOCAL_NODE_STATE.parse(output)
    if state == "locked":
        return Verdict.failure("the restored swarm is locked (autolock): run `docker swarm unlock` there with its key")
    return Verdict.ready(f"engine up, swarm {state}") if state else Verdict.waiting("the engine does not answer yet")


def plan_swarm_restore(target: Node, archive: bytes, systemd: bool, stamp: str) -> Plan:
    """Put a backed-up swarm directory in place on one manager and re-form the swarm from it (Docker's
    admin guide: stop the engine, replace /var/lib/docker/swarm, start it, --force-new-cluster). The
    node's own directory is kept beside it as swarm.before-restore."""
    remote = f"{REMOTE_DIR}/{stamp}-swarm.tar.gz"
    stop, start = engine_commands(systemd)
    swarm, kept = SWARM_DIR, f"{SWARM_DIR}.before-restore"
    swap = (
        f"{stop} && {{ {{ [ ! -e {swarm} ] || {{ rm -rf {kept} && mv {swarm} {kept}; }}; }} && "
        f"tar -C {SWARM_PARENT} -xzf {remote} {SWARM_BASENAME}; rc=$?; {start} || rc=$?; rm -f {remote}; exit $rc; }}"
    )
    ip, name = target.private_ip, target.name
    return Plan(
        (
            Run(name, f"mkdir -p -m 700 {REMOTE_DIR}", "a private scratch directory", changes=False),
            Write(name, remote, archive, f"the swarm state of {stamp} uploaded", mode=0o600),
            Run(name, swap, f"swarm state of {stamp} in place on {name} (its own kept in {kept})"),
            Wait(name, LOCAL_NODE_STATE.command, _engine_back, f"{name}'s engine back", RETURN_TIMEOUT, 2),
            Run(
                name,
                f"docker swarm init --force-new-cluster --advertise-addr {ip} --listen-addr {ip}:{SWARM_PORT}",
                f"swarm re-formed on {name} from the backup",
            ),
            Wait(name, NODES.command, leader_verdict, f"{name} leads", RETURN_TIMEOUT, 2),
            *(
                Run(
                    name,
                    f"docker swarm join-token --rotate -q {role.value} >/dev/null",
                    f"{role.value} join token rotated",
                )
                for role in TokenRole
            ),
        )
    )


# --- pruning: the N newest backups of a cluster kept, the older ones removed ------------------------------


@dataclass(frozen=True)
class Pruning:
    kept: tuple[str, ...]  # this cluster's backups kept, newest first
    removed: tuple[str, ...]  # this cluster's backups beyond the newest, oldest first
    ignored: tuple[str, ...]  # "name: why" of every other entry, left alone


def backup_time(name: str) -> datetime | None:
    """The time a backup's directory name says (`fab backup` names it so), None if it is not one."""
    try:
        when = datetime.strptime(name, STAMP_FORMAT)
    except ValueError:
        return None
    return when if when.strftime(STAMP_FORMAT) == name else None


def not_ours(entry: Found, cluster: str) -> str:
    """Why an entry of the backups directory is not one of `cluster`'s backups ('' if it is one)."""
    if not entry.directory:
        return "not a directory"
    if backup_time(entry.name) is None:
        return f"not named as a backup's time ({STAMP_FORMAT})"
    if not entry.cluster:
        return f"no readable {MANIFEST} (an interrupted backup, or not one)"
    if entry.cluster != cluster:
        return f"a backup of cluster {entry.cluster}"
    if entry.unlisted:
        return f"holds files its {MANIFEST} does not name: {', '.join(entry.unlisted[:3])}"
    return ""


def check_keep(keep: int) -> None:
    if keep < 1:
        raise ConfigError(
            "--keep", keep, "would remove every backup", "give how many of the newest backups to keep: 1 or more"
        )


def plan_prune(found: Sequence[Found], cluster: str, keep: int, *, taking: bool = False) -> Pruning:
    """Keep `cluster`'s `keep` newest backups (by the time their names say), remove its older ones, leave
    everything else alone. `taking`: a backup not yet written (a dry run) will be the newest, and keeps
    one of the places."""
    check_keep(keep)
    # Names in STAMP_FORMAT (zero-padded, year first) sort as their times do.
    ours = sorted((e.name for e in found if not not_ours(e, cluster)), reverse=True)
    places = keep - 1 if taking else keep
    ignored = tuple(f"{e.name}: {why}" for e in found if (why := not_ours(e, cluster)))
    return Pruning(kept=tuple(ours[:places]), removed=tuple(reversed(ours[places:])), ignored=ignored)
