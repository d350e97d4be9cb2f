"""Bootstrap tasks: swarm-init, swarm-join, drain-managers. Each reads facts, plans, and runs only
what the plan says, so a second run changes nothing and says so."""

from __future__ import annotations

import time

from cluster.errors import SwarmlabError
from cluster.facts import (
    NODE_LIST_COMMAND,
    SWARM_INFO_COMMAND,
    SwarmInfo,
    SwarmNode,
    parse_node_list,
    parse_running_tasks,
    parse_swarm_info,
    running_tasks_command,
)
from cluster.inventory import Node
from cluster.plan import Step, TokenRole, plan_drain, plan_init, plan_join
from cluster.progress import PhaseResult, phase
from cluster.runners import Nodes

READY_TIMEOUT = 120
DRAIN_TIMEOUT = 180


def swarm_infos(nodes: Nodes, targets: list[Node]) -> dict[str, SwarmInfo]:
    return nodes.each(
        targets, lambda n: parse_swarm_info(nodes.run(n, SWARM_INFO_COMMAND).stdout), "reading swarm state"
    )


def members(nodes: Nodes, leader: Node) -> tuple[SwarmNode, ...]:
    return parse_node_list(nodes.run(leader, NODE_LIST_COMMAND).stdout)


def find_leader(nodes: Nodes) -> Node:
    """A reachable manager with control available (manager commands run there).

    Managers are asked one by one, so a cluster that lost some managers can still be inspected.
    """
    problems = []
    for node in nodes.inventory.managers:
        try:
            info = parse_swarm_info(nodes.run(node, SWARM_INFO_COMMAND).stdout)
        except SwarmlabError as error:
            problems.append(f"{node.name}: {error}")
            continue
        if info.in_swarm and info.is_manager:
            return node
        problems.append(f"{node.name}: not a manager with control available (state {info.state})")
    raise SwarmlabError(
        "no reachable manager controls a swarm (run `fab bootstrap` for a new cluster):\n" + "\n".join(problems)
    )


def _run_step(nodes: Nodes, step: Step, tokens: dict[TokenRole, str], progress: PhaseResult) -> None:
    node = nodes.inventory.node(step.node)
    token = tokens[step.token] if step.token else None
    secrets = tuple(tokens.values())
    nodes.run(node, step.command, stdin=token, secrets=secrets)
    progress.changed(step.why)


def swarm_init(nodes: Nodes, overlay_pool: str) -> Node:
    with phase("swarm-init", "initialise the swarm on the first manager (advertising its private address)") as p:
        managers = list(nodes.inventory.managers)
        plan = plan_init(swarm_infos(nodes, managers), managers, overlay_pool)
        for step in plan.steps:
            _run_step(nodes, step, {}, p)
        if not plan.steps:
            p.note(f"already initialised; {plan.leader} is a manager of it")
        return nodes.inventory.node(plan.leader)


def _join_tokens(nodes: Nodes, leader: Node, needed: set[TokenRole]) -> dict[TokenRole, str]:
    # Held in memory only: never written to disk, printed, or put on a command line we log.
    return {role: nodes.run(leader, f"docker swarm join-token -q {role.value}").stdout.strip() for role in needed}


def wait_ready(nodes: Nodes, leader: Node, timeout: float = READY_TIMEOUT) -> tuple[SwarmNode, ...]:
    wanted = {n.name for n in nodes.inventory.swarm_nodes}
    deadline = time.monotonic() + timeout
    while True:
        listed = members(nodes, leader)
        ready = {m.hostname for m in listed if m.status == "Ready"}
        if wanted <= ready:
            return listed
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(wanted - ready))
            raise SwarmlabError(
                f"nodes not Ready in the swarm after {timeout:.0f}s: {missing} (see `docker node ls` on {leader.name})"
            )
        time.sleep(1)


def swarm_join(nodes: Nodes, leader: Node | None = None) -> None:
    with phase("swarm-join", "join managers (one at a time: Raft membership) and workers (in parallel)") as p:
        leader = leader or find_leader(nodes)
        targets = list(nodes.inventory.swarm_nodes)
        steps = plan_join(swarm_infos(nodes, targets), targets, members(nodes, leader), leader)
        tokens = _join_tokens(nodes, leader, {s.token for s in steps if s.token})
        manager_steps = [s for s in steps if s.token is not TokenRole.WORKER]
        worker_steps = [s for s in steps if s.token is TokenRole.WORKER]
        for step in manager_steps:
            _run_step(nodes, step, tokens, p)
        by_node = {s.node: s for s in worker_steps}
        workers = [nodes.inventory.node(name) for name in by_node]
        nodes.each(workers, lambda n: _run_step(nodes, by_node[n.name], tokens, p), "swarm-join")
        if not steps:
            p.note("every node is already a member with the right role")
        wait_ready(nodes, leader)


def drain_managers(nodes: Nodes, leader: Node | None = None) -> None:
    with phase("drain-managers", "set every manager to Drain and wait until no task runs on one") as p:
        leader = leader or find_leader(nodes)
        listed = members(nodes, leader)
        for step in plan_drain(listed, nodes.inventory.managers, leader):
            _run_step(nodes, step, {}, p)
        manager_ids = [m.node_id for m in listed if m.hostname in {n.name for n in nodes.inventory.managers}]
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            running = parse_running_tasks(nodes.run(leader, running_tasks_command(manager_ids)).stdout)
            if not running:
                break
            if time.monotonic() > deadline:
                raise SwarmlabError(f"tasks still run on managers after {DRAIN_TIMEOUT}s: {', '.join(running)}")
            time.sleep(2)
        if not p.changes:
            p.note("every manager is already drained and runs no task")
