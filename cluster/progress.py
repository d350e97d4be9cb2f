"""Progress output: each phase says what it does, whether it changed anything, and how long it took.

A run's phases are kept by the Timings object that run owns (its Session's, or the one the lab's
creation is given), so the caller prints the table and the verdict from what it got back: no
module-level state, nothing for a test to clear."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class PhaseResult:
    name: str
    seconds: float = 0.0
    changes: list[str] = field(default_factory=list)
    failed: bool = False
    would_change: bool = False  # a dry run found something to change

    @property
    def outcome(self) -> str:
        if self.failed:
            return "FAILED"
        if self.changes:
            return "changed"
        return "would change" if self.would_change else "no change"

    def changed(self, what: str) -> None:
        self.changes.append(what)
        say(f"    changed: {what}")

    def note(self, what: str) -> None:
        say(f"    {what}")

    def planned(self, what: str, changes: bool) -> None:
        """A dry run's line: what would happen (nothing is run)."""
        self.would_change = self.would_change or changes
        say(f"    {what}")


@dataclass
class Timings:
    phases: list[PhaseResult] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(p.changes for p in self.phases)

    @property
    def would_change(self) -> bool:
        return any(p.would_change for p in self.phases)

    def table(self) -> str:
        width = max([len(p.name) for p in self.phases] + [5])
        lines = [f"{'phase':<{width}}  {'seconds':>8}  result", f"{'-' * width}  {'-' * 8}  {'-' * 9}"]
        for p in self.phases:
            lines.append(f"{p.name:<{width}}  {p.seconds:>8.1f}  {p.outcome}")
        total = sum(p.seconds for p in self.phases)
        lines.append(f"{'total':<{width}}  {total:>8.1f}")
        return "\n".join(lines)

    @contextmanager
    def phase(self, name: str, description: str) -> Iterator[PhaseResult]:
        """Time a phase and record it here (printed as a table at the end of a run)."""
        result = PhaseResult(name)
        say(f"==> {name}: {description}")
        start = time.monotonic()
        try:
            yield result
        except BaseException:
            result.failed = True
            raise
        finally:
            result.seconds = time.monotonic() - start
            self.phases.append(result)
            say(f"<== {name}: {result.outcome} in {result.seconds:.1f}s")


_SAYING = threading.Lock()


def say(message: str) -> None:
    """One whole line at a time: print() writes the text and its newline apart, so lines said from
    parallel work (joins, builds) ran into each other."""
    with _SAYING:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
