"""The operation model: a plan is a tuple of typed operations that a pure planner returns from facts.

Planners (cluster/plans/) never touch a node; the executor (cluster/executor.py) is the one place
operations run, so every changing task gets the same `--dry-run`, `changed` / `no change`, timing
and error reporting. An operation that `changes` something is reported as a change; checks,
uploads and waits are not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.waiting import Verdict


@dataclass(frozen=True)
class Run:
    """A command on a node. `stdin` names a runtime secret (a join token, a password) fed on stdin:
    the plan holds the name, never the value."""

    node: str
    command: str
    why: str
    changes: bool = True
    stdin: str | None = None
    timeout: float | None = None
    hint: str = ""


@dataclass(frozen=True)
class Write:
    """A file on a node, written over SFTP (configuration files, build contexts)."""

    node: str
    path: str
    content: bytes
    why: str
    mode: int = 0o644
    changes: bool = False


@dataclass(frozen=True)
class Fetch:
    """A file fetched from a node to the operator's machine (mode 600): backups."""

    node: str
    remote: str
    local: Path
    why: str
    changes: bool = False


@dataclass(frozen=True)
class Wait:
    """Run `command` on a node until `verdict` of its output says done (or failed for good)."""

    node: str
    command: str
    verdict: Callable[[str], Verdict]
    what: str
    timeout: float
    interval: float = 1.0
    changes: bool = False
    progress: bool = False  # print what it sees whenever that changes (long waits)


@dataclass(frozen=True)
class Parallel:
    """Commands at once (on one node or several); every failure is reported, not just the first."""

    runs: tuple[Run, ...]
    what: str

    @property
    def changes(self) -> bool:
        return any(r.changes for r in self.runs)


Operation = Run | Write | Fetch | Wait | Parallel


@dataclass(frozen=True)
class Plan:
    """What to do, in order, and what the planner noticed (printed even when there is nothing to do)."""

    operations: tuple[Operation, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return any(op.changes for op in self.operations)

    @property
    def runs(self) -> tuple[Run, ...]:
        """Every command of the plan, parallel ones included, in order."""
        found: list[Run] = []
        for op in self.operations:
            if isinstance(op, Run):
                found.append(op)
            elif isinstance(op, Parallel):
                found.extend(op.runs)
        return tuple(found)

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.operations + other.operations, self.notes + other.notes)


def describe(operation: Operation) -> str:
    """One line of a dry run: what would happen, where."""
    if isinstance(operation, Run):
        kind = "change" if operation.changes else "check"
        return f"would {kind} on {operation.node}: {operation.why}\n      $ {operation.command}"
    if isinstance(operation, Write):
        return f"would write {operation.path} on {operation.node} ({len(operation.content)} bytes): {operation.why}"
    if isinstance(operation, Fetch):
        return f"would fetch {operation.remote} from {operation.node} to {operation.local}: {operation.why}"
    if isinstance(operation, Wait):
        return f"would wait on {operation.node} (up to {operation.timeout:.0f}s): {operation.what}"
    return "\n".join([f"would run at once: {operation.what}", *(f"  {describe(r)}" for r in operation.runs)])
