"""Progress output: each phase says what it does, whether it changed anything, and how long it took."""

from __future__ import annotations

import sys
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

    def changed(self, what: str) -> None:
        self.changes.append(what)
        say(f"    changed: {what}")

    def note(self, what: str) -> None:
        say(f"    {what}")


@dataclass
class Timings:
    phases: list[PhaseResult] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(p.changes for p in self.phases)

    def table(self) -> str:
        width = max([len(p.name) for p in self.phases] + [5])
        lines = [f"{'phase':<{width}}  {'seconds':>8}  result", f"{'-' * width}  {'-' * 8}  {'-' * 9}"]
        for p in self.phases:
            result = "FAILED" if p.failed else ("changed" if p.changes else "no change")
            lines.append(f"{p.name:<{width}}  {p.seconds:>8.1f}  {result}")
        total = sum(p.seconds for p in self.phases)
        lines.append(f"{'total':<{width}}  {total:>8.1f}")
        return "\n".join(lines)


TIMINGS = Timings()


def say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)


@contextmanager
def phase(name: str, description: str) -> Iterator[PhaseResult]:
    """Time a phase and record it in TIMINGS (printed as a table at the end of a run)."""
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
        TIMINGS.phases.append(result)
        outcome = "FAILED" if result.failed else ("changed" if result.changes else "no change")
        say(f"<== {name}: {outcome} in {result.seconds:.1f}s")
