"""cluster-map: run the map's image (built by the flow's build-images step from
plans.clustermap.MAP_IMAGES) on every
manager, and say where it answers (see cluster/plans/clustermap.py for why a plain container on the
managers)."""

from __future__ import annotations

from collections.abc import Sequence

from cluster.facts import read
from cluster.facts.daemons import MAP, MapFacts
from cluster.inventory import Node
from cluster.plans.clustermap import plan_map, plan_remove
from cluster.session import Session
from topology import MAP_PORT


def _facts(session: Session, managers: Sequence[Node]) -> dict[str, MapFacts]:
    runner = session.runner
    return runner.each(managers, lambda n: read(runner, n, MAP), "map facts")


def deploy_map(session: Session, image: str) -> None:
    """Run the map's `image` (a pullable reference) on every manager."""
    managers = session.inventory.managers
    with session.phase("cluster-map", f"the cluster map on every manager, port {MAP_PORT} of its private address") as p:
        addresses = [(m.name, str(m.private_ip)) for m in managers]
        session.executor().execute(plan_map(addresses, _facts(session, managers), image, MAP_PORT), p)


def remove_map(session: Session) -> None:
    managers = session.inventory.managers
    with session.phase("cluster-map", "remove the cluster map from the managers") as p:
        session.executor().execute(plan_remove([m.name for m in managers], _facts(session, managers)), p)
