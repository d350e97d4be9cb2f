"""rotate-join-tokens and rotate-ca."""

from __future__ import annotations

from cluster.facts import CA_COMMAND, parse_ca
from cluster.plans.security import plan_rotate_ca, plan_rotate_tokens
from cluster.session import Session
from cluster.tasks.swarm import find_leader


def rotate_join_tokens(session: Session) -> None:
    with session.phase("rotate-join-tokens", "new worker and manager join tokens (joined nodes are not affected)") as p:
        leader = find_leader(session.runner)
        session.executor().execute(plan_rotate_tokens(leader.name), p)


def rotate_ca(session: Session) -> None:
    with session.phase("rotate-ca", "a new root CA; every node renews its certificate") as p:
        leader = find_leader(session.runner)
        facts = parse_ca(session.runner.run(leader, CA_COMMAND).stdout)
        session.executor().execute(plan_rotate_ca(leader.name, facts), p)
