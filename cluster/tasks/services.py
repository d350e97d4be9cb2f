"""Day-2 service tasks: scale, update, rollback, rebalance. Each reads the swarm's services, tasks and
nodes from a manager, plans (cluster/plans/services.py) and hands the plan to the executor."""

from __future__ import annotations

from cluster.plans.services import (
    parse_scale,
    plan_rebalance,
    plan_rollback,
    plan_scale,
    plan_update,
    resolve_service,
    running_tasks,
)
from cluster.reads import find_leader, swarm_state
from cluster.session import Session


def scale(session: Session, spec: str) -> None:
    name, replicas = parse_scale(spec)  # bad input stops here, before any node is asked
    with session.phase("scale", f"set {name} to {replicas} replicas and wait until they run, healthy") as p:
        leader = find_leader(session.runner)
        state = swarm_state(session.runner, leader)
        service = resolve_service(state.services, name, session.config.stack)
        running = len(running_tasks(state, service))
        session.executor().execute(plan_scale(leader.name, service, replicas, state.nodes, running), p)


def update(session: Session, name: str, image: str = "", force: bool = False) -> None:
    with session.phase("update", f"rolling update of {name} and wait until it completes") as p:
        leader = find_leader(session.runner)
        state = swarm_state(session.runner, leader)
        service = resolve_service(state.services, name, session.config.stack)
        session.executor().execute(plan_update(leader.name, service, image, force), p)


def rollback(session: Session, name: str) -> None:
    with session.phase("rollback", f"roll {name} back to its previous spec and wait until it completes") as p:
        leader = find_leader(session.runner)
        state = swarm_state(session.runner, leader)
        service = resolve_service(state.services, name, session.config.stack)
        session.executor().execute(plan_rollback(leader.name, service), p)


def rebalance(session: Session) -> None:
    with session.phase("rebalance", "spread unevenly placed services again, one service at a time") as p:
        leader = find_leader(session.runner)
        session.executor().execute(plan_rebalance(leader.name, swarm_state(session.runner, leader)), p)
