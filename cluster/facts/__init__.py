"""Facts: what a node says, each one object holding the command that asks and the pure parser of its
answer (the pyinfra way), read through the runner in one call: `read(runner, node, NODES)`.

The facts live in this package by subject (cluster/facts/swarm.py, services.py, logs.py, daemons.py,
storage.py, managers.py, prometheus.py, certificates.py, network.py); a command that reads the cluster is written here and nowhere
else, a command that changes it belongs to a plan. Each parser is tested against recorded outputs
(tests/unit/facts/*.json hold the command, the output and the parsed fact).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from cluster.inventory import Node
    from cluster.runners import Runner

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Fact(Generic[T_co]):
    """A command to run on a node and the parser of its output. Parameterised facts are made by
    functions of this package (`stack_services("registration")`); plain ones are constants."""

    command: str
    parse: Callable[[str], T_co]


def read(
    runner: Runner,
    node: Node,
    fact: Fact[T],
    *,
    check: bool = True,
    timeout: float | None = None,
    hint: str = "",
    secrets: Sequence[str] = (),
) -> T:
    """Run the fact's command on the node and parse what it printed (with check=False, even when the
    command failed: the parser gets whatever it printed)."""
    result = runner.run(node, fact.command, check=check, timeout=timeout, hint=hint, secrets=secrets)
    return fact.parse(result.stdout)
