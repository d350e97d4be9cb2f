"""bootstrap: the whole sequence that turns provisioned machines into a working cluster, in order."""

from __future__ import annotations

from cluster.inventory import Node
from cluster.session import Session
from cluster.tasks.haproxy import configure_haproxy
from cluster.tasks.nfs import configure_nfs
from cluster.tasks.registry import configure_registry
from cluster.tasks.swarm import drain_managers, swarm_init, swarm_join


def bootstrap(session: Session) -> Node:
    """swarm-init, swarm-join, drain-managers, haproxy, nfs, registry; returns the manager later steps run on."""
    leader = swarm_init(session)
    swarm_join(session, leader)
    drain_managers(session, leader)
    configure_haproxy(session, leader)
    configure_nfs(session)
    configure_registry(session)
    return leader
