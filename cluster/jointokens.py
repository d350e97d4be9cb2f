"""The swarm's join tokens, read from a manager: the one place that asks for them.

A token is held in memory only and fed to `docker swarm join` on stdin: never printed, written, or put
on a command line that is logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.swarm import join_token
from cluster.inventory import Node
from cluster.runners import Runner

Role = TypeVar("Role", bound=str)


def read_join_tokens(runner: Runner, leader: Node, roles: Iterable[Role]) -> dict[Role, str]:
    """Each role's join token (role: "manager" or "worker"), as the leader gives it now."""
    found = {}
    for role in roles:
        token = read(runner, leader, join_token(role))
        if not token:
            raise SwarmlabError(
                f"{leader.name} gives an empty {role} join token (seen after re-forming a swarm: moby/swarmkit#2651). "
                "Fix: check `docker info` there shows it as a manager; restart its engine and run the task again"
            )
        found[role] = token
    return found
