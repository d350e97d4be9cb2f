"""Plans, pure: facts read from the nodes in, the commands that bring the swarm to the wanted state out.

An empty plan means the cluster is already as wanted, which is how the tasks report "no change".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cluster.errors import SwarmlabError
from cluster.facts import SwarmInfo, SwarmNode
from cluster.inventory import Node, Role

SWARM_PORT = 2377


class PlanError(SwarmlabError):
    """The facts contradict the inventory in a way the tool must not repair on its own."""


class TokenRole(StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


@dataclass(frozen=True)
class Step:
    """A command to run on a node. When `token` is set, the join token of that role goes on stdin."""

    node: str
    command: str
    why: str
    token: TokenRole | None = None


@dataclass(frozen=True)
class InitPlan:
    leader: str
    steps: tuple[Step, ...]


def plan_init(infos: Mapping[str, SwarmInfo], managers: Sequence[Node], overlay_pool: str) -> InitPlan:
    """Initialise the swarm on the first manager unless a manager already runs one."""
    clusters: dict[str, list[str]] = {}
    for node in managers:
        info = infos[node.name]
        if info.in_swarm and info.is_manager:
            clusters.setdefault(info.cluster_id, []).append(node.name)
    if len(clusters) > 1:
        found = "; ".join(f"swarm {cid[:12]}: {', '.join(names)}" for cid, names in sorted(clusters.items()))
        raise PlanError(
            f"the managers belong to different swarms ({found}). Fix: keep one, and on the others run "
            "`docker swarm leave --force` (this loses their swarm state), then bootstrap again"
        )
    if clusters:
        names = next(iter(clusters.values()))
        return InitPlan(leader=names[0], steps=())
    first = managers[0]
    ip = first.private_ip
    command = (
        f"docker swarm init --advertise-addr {ip} --listen-addr {ip}:{SWARM_PORT} "
        f"--default-addr-pool {overlay_pool} --default-addr-pool-mask-length 24"
    )
    return InitPlan(
        leader=first.name,
        steps=(Step(first.name, command, f"swarm initialised on {first.name} (no manager was in a swarm)"),),
    )


def plan_join(
    infos: Mapping[str, SwarmInfo], nodes: Sequence[Node], members: Sequence[SwarmNode], leader: Node
) -> tuple[Step, ...]:
    """Join every node that is not yet a member, and fix the role of members that have the wrong one.

    Joins run on the joining node; promotions and demotions run on the leader.
    """
    member_ids = {m.node_id: m for m in members}
    steps: list[Step] = []
    wrong: list[str] = []
    for node in nodes:
        if node.name == leader.name:
            continue
        info = infos[node.name]
        want = TokenRole.MANAGER if node.role is Role.MANAGER else TokenRole.WORKER
        if info.in_swarm and info.node_id in member_ids:
            is_manager = member_ids[info.node_id].is_manager
            if want is TokenRole.MANAGER and not is_manager:
                steps.append(
                    Step(leader.name, f"docker node promote {info.node_id}", f"{node.name} promoted to manager")
                )
            elif want is TokenRole.WORKER and is_manager:
                steps.append(Step(leader.name, f"docker node demote {info.node_id}", f"{node.name} demoted to worker"))
            continue
        if info.in_swarm:
            wrong.append(node.name)
            continue
        ip = node.private_ip
        command = (
            f'docker swarm join --token "$(cat)" --advertise-addr {ip} --listen-addr {ip}:{SWARM_PORT} '
            f"{leader.private_ip}:{SWARM_PORT}"
        )
        steps.append(Step(node.name, command, f"{node.name} joined as {want.value}", token=want))
    if wrong:
        raise PlanError(
            f"{', '.join(wrong)} already belong to another swarm. Fix: run `docker swarm leave --force` on "
            "them (or recreate them), then bootstrap again"
        )
    return tuple(steps)


def plan_drain(members: Sequence[SwarmNode], managers: Sequence[Node], leader: Node) -> tuple[Step, ...]:
    """Set every manager to Drain so that only workers run tasks."""
    names = {m.name for m in managers}
    return tuple(
        Step(
            leader.name,
            f"docker node update --availability drain {m.node_id}",
            f"{m.hostname} drained (was {m.availability})",
        )
        for m in members
        if m.hostname in names and m.status == "Ready" and m.availability != "Drain"
    )
