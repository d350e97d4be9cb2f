"""Swarm tasks: swarm-init, swarm-join, drain-managers. Each reads facts, plans, and hands the plan
to the executor, so a second run changes nothing and says so, and `--dry-run` shows the plan."""

from __future__ import annotations

from cluster.facts import read
from cluster.facts.swarm import SWARM_INFO, SwarmInfo
from cluster.inventory import Node
from cluster.jointokens import read_join_tokens
from cluster.plans.swarm import TokenRole, plan_drain, plan_init, plan_join, token_secret, tokens_needed
from cluster.reads import find_leader, members
from cluster.runners import Runner
from cluster.session import Session


def swarm_infos(runner: Runner, targets: list[Node]) -> dict[str, SwarmInfo]:
    return runner.each(targets, lambda n: read(runner, n, SWARM_INFO), "reading swarm state")


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
