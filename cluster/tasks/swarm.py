"""Swarm tasks: swarm-init, swarm-join, drain-managers. Each reads facts, plans, and hands the plan
to the executor, so a second run changes nothing and says so, and `--dry-run` shows the plan."""

from __future__ import annotations

from cluster.errors import SwarmlabError
from cluster.facts import NODE_LIST_COMMAND, SWARM_INFO_COMMAND, SwarmInfo, SwarmNode, parse_node_list, parse_swarm_info
from cluster.inventory import Node
from cluster.jointokens import read_join_tokens
from cluster.plans.swarm import TokenRole, plan_drain, plan_init, plan_join, token_secret, tokens_needed
from cluster.runners import Runner
from cluster.session import Session


def swarm_infos(runner: Runner, targets: list[Node]) -> dict[str, SwarmInfo]:
    return runner.each(
        targets, lambda n: parse_swarm_info(runner.run(n, SWARM_INFO_COMMAND).stdout), "reading swarm state"
    )


def members(runner: Runner, leader: Node, *, missing_ok: bool = False) -> tuple[SwarmNode, ...]:
    """`docker node ls` on the leader; with missing_ok (a dry run before the swarm exists), none."""
    result = runner.run(leader, NODE_LIST_COMMAND, check=not missing_ok)
    return parse_node_list(result.stdout) if result.ok else ()


def find_leader(runner: Runner) -> Node:
    """A reachable manager with control available (manager commands run there).

    Managers are asked one by one, so a cluster that lost some managers can still be inspected.
    """
    problems = []
    for node in runner.inventory.managers:
        try:
            info = parse_swarm_info(runner.run(node, SWARM_INFO_COMMAND).stdout)
        except SwarmlabError as error:
            problems.append(f"{node.name}: {error}")
            continue
        if info.in_swarm and info.is_manager:
            return node
        problems.append(f"{node.name}: not a manager with control available (state {info.state})")
    raise SwarmlabError(
        "no reachable manager controls a swarm (run `fab bootstrap` for a new cluster):\n" + "\n".join(problems)
    )


def swarm_init(session: Session) -> Node:
    with session.phase(
        "swarm-init", "initialise the swarm on the first manager (advertising its private address)"
    ) as p:
        managers = list(session.inventory.managers)
        leader, plan = plan_init(swarm_infos(session.runner, managers), managers, str(session.config.overlay_pool))
        session.executor().execute(plan, p)
        return session.inventory.node(leader)


def _join_tokens(runner: Runner, leader: Node, needed: set[TokenRole]) -> dict[str, str]:
    return {token_secret(role): token for role, token in read_join_tokens(runner, leader, needed).items()}


def swarm_join(session: Session, leader: Node | None = None) -> None:
    with session.phase("swarm-join", "join managers (one at a time: Raft membership) and workers (in parallel)") as p:
        runner = session.runner
        leader = leader or find_leader(runner)
        targets = list(session.inventory.swarm_nodes)
        listed = members(runner, leader, missing_ok=session.dry_run)
        plan = plan_join(swarm_infos(runner, targets), targets, listed, leader)
        tokens = {} if session.dry_run else _join_tokens(runner, leader, tokens_needed(plan))
        session.executor(secrets=tokens).execute(plan, p)


def drain_managers(session: Session, leader: Node | None = None) -> None:
    with session.phase("drain-managers", "set every manager to Drain and wait until no task runs on one") as p:
        leader = leader or find_leader(session.runner)
        listed = members(session.runner, leader, missing_ok=session.dry_run)
        session.executor().execute(plan_drain(listed, session.inventory.managers, leader), p)
