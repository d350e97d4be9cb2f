"""drain-node and activate-node: a node's availability, waited on until the services run what they can."""

from __future__ import annotations

from cluster.plans.nodes import NodeError, plan_activate_node, plan_drain_node
from cluster.reads import find_leader, swarm_state
from cluster.session import Session


def _known(session: Session, name: str) -> None:
    names = [n.name for n in session.inventory.swarm_nodes]
    if name not in names:
        raise NodeError(f"unknown node {name!r}: the inventory's swarm nodes are {', '.join(names)}")


def drain_node(session: Session, name: str) -> None:
    _known(session, name)
    with session.phase("drain-node", f"drain {name}: its tasks move to other nodes") as p:
        leader = find_leader(session.runner)
        session.executor().execute(plan_drain_node(leader.name, name, swarm_state(session.runner, leader)), p)


def activate_node(session: Session, name: str) -> None:
    _known(session, name)
    with session.phase("activate-node", f"make {name} schedulable again") as p:
        leader = find_leader(session.runner)
        session.executor().execute(plan_activate_node(leader.name, name, swarm_state(session.runner, leader)), p)
