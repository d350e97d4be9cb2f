"""converge: after nodes came back (recover, restore --swarm), wait until every service runs its
replicas, healthy, where the swarm can place them now."""

from __future__ import annotations

from cluster.facts.services import SWARM_STATE
from cluster.inventory import Node
from cluster.operations import Plan, Wait
from cluster.plans.nodes import MOVE_TIMEOUT, expected_after, placed_verdict
from cluster.reads import swarm_state
from cluster.session import Session


def converge(session: Session, leader: Node) -> None:
    with session.phase("converge", "wait until every service runs its replicas, healthy") as p:
        state = swarm_state(session.runner, leader)
        wait = Wait(
            leader.name,
            SWARM_STATE.command,
            placed_verdict(expected_after(state, state.nodes)),
            "every service runs its replicas, healthy",
            MOVE_TIMEOUT,
            3,
        )
        session.executor().execute(Plan((wait,)), p)
