"""Waiting for a condition, with one helper (tenacity) instead of hand-written polling loops.

A check returns a Verdict: done, not yet (with what it saw), or failed for good (stop waiting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryError, Retrying, retry_if_result, stop_before_delay, wait_fixed

from cluster.errors import SwarmlabError


@dataclass(frozen=True)
class Verdict:
    done: bool
    detail: str = ""  # what the check saw: shown when the wait times out or fails
    failed: bool = False  # no point in waiting longer

    @classmethod
    def ready(cls, detail: str = "") -> Verdict:
        return cls(True, detail)

    @classmethod
    def waiting(cls, detail: str) -> Verdict:
        return cls(False, detail)

    @classmethod
    def failure(cls, detail: str) -> Verdict:
        return cls(False, detail, failed=True)


class WaitFailed(SwarmlabError):
    """A wait timed out, or its check said it can never succeed."""


def wait_until(check: Callable[[], Verdict], *, what: str, timeout: float, interval: float = 1.0) -> Verdict:
    """Call check until it is done; raise WaitFailed naming `what` and the last thing seen otherwise.

    Errors the check raises (a node not answering yet) count as "not yet" until the timeout, then
    the last one is reported.
    """
    last: list[str] = [""]

    def attempt() -> Verdict:
        try:
            verdict = check()
        except SwarmlabError as error:
            verdict = Verdict.waiting(str(error))
        last[0] = verdict.detail
        return verdict

    retrying = Retrying(
        stop=stop_before_delay(timeout),  # never sleep past the timeout only to give up after
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda v: not v.done and not v.failed),
    )
    try:
        verdict = retrying(attempt)
    except RetryError:
        raise WaitFailed(f"{what}: not reached after {timeout:.0f}s" + (f":\n{last[0]}" if last[0] else "")) from None
    if verdict.failed:
        raise WaitFailed(f"{what}: failed:\n{verdict.detail}")
    return verdict
