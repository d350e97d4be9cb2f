"""Autolock tasks (cluster/plans/autolock.py says what and why): turn it on as the configuration asks
and keep the key, unlock the managers that come back locked, rotate the key. The keys go to the
engines on stdin and to the state directory; never to the output."""

from __future__ import annotations

from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.autolock import AUTOLOCK_ON
from cluster.inventory import Node
from cluster.plans.autolock import plan_autolock, plan_rotate, plan_unlock
from cluster.progress import PhaseResult
from cluster.reads import find_leader, locked_nodes
from cluster.session import Session
from cluster.unlockkeys import keep_current_key, unlock_secrets


def _keep_key(session: Session, leader: Node, p: PhaseResult) -> None:
    if not session.dry_run and keep_current_key(session.runner, leader, session.state):
        p.changed(f"unlock key kept in {session.state.unlock_keys} (mode 600; the previous ones after it)")


def set_autolock(session: Session, leader: Node) -> None:
    """Autolock as the configuration says, and its current key in the state directory."""
    wanted = session.config.autolock
    with session.phase("autolock", "swarm autolock as configured; its unlock key kept in the state directory") as p:
        on = read(session.runner, leader, AUTOLOCK_ON)
        session.executor().execute(plan_autolock(leader.name, on=on, wanted=wanted), p)
        if wanted:
            _keep_key(session, leader, p)


def unlock_managers(session: Session) -> list[str]:
    """Every manager that answers locked, unlocked with the state directory's keys; returns their names."""
    with session.phase("unlock", "unlock the managers whose swarm is locked (autolock)") as p:
        locked = locked_nodes(session.runner, session.inventory.managers)
        if not locked:
            p.note("no manager is locked")
            return []
        session.executor(secrets=unlock_secrets(session.state, locked)).execute(plan_unlock(locked), p)
        return locked


def rotate_unlock_key(session: Session) -> None:
    with session.phase("rotate-unlock-key", "a new unlock key, kept in the state directory before the old one") as p:
        leader = find_leader(session.runner)
        if not read(session.runner, leader, AUTOLOCK_ON):
            raise SwarmlabError(
                "autolock is off on this swarm: there is no unlock key to rotate. Fix: set autolock: true "
                "(the default) and run `fab bootstrap`"
            )
        session.executor().execute(plan_rotate(leader.name), p)
        _keep_key(session, leader, p)
