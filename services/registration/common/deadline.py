"""Request deadlines and retry with backoff, shared by the API, the UI and the workers.

A request has one time budget (``REQUEST_DEADLINE``, 40 s by default): long enough to ride out a
stateful single-replica service (PostgreSQL, Redis, RabbitMQ) being stopped and started on
another worker, short enough that the caller gets a clear answer. Everything a request does
(RPC calls, database and Redis operations in the workers) retries within that budget and no
longer. The budget travels with an RPC request, so a worker stops retrying when its caller has
given up.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_REQUEST_DEADLINE: Final = 40.0
# A worker operation outside any request (start-up, a test) still gets a bounded budget.
DEFAULT_OPERATION_BUDGET: Final = 30.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TransientError(Exception):
    """A dependency is unavailable for now (moving, restarting); the same call may succeed later."""


class DeadlineExceeded(TransientError):
    """The request's time budget ran out while a dependency was still unavailable."""


class Deadline:
    """A point in (monotonic) time by which a request must be answered."""

    __slots__ = ("_clock", "at")

    def __init__(self, seconds: float, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.at = clock() + max(0.0, seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("registration_deadline", default=None)


def current_deadline(default: float = DEFAULT_OPERATION_BUDGET) -> Deadline:
    """The deadline of the request being handled (set by the RPC server), else a fresh one."""
    deadline = _current.get()
    return deadline if deadline is not None else Deadline(default)


def set_current_deadline(deadline: Deadline | None) -> contextvars.Token[Deadline | None]:
    return _current.set(deadline)


def reset_current_deadline(token: contextvars.Token[Deadline | None]) -> None:
    _current.reset(token)


def backoff_delays(base: float = 0.25, cap: float = 4.0) -> Callable[[int], float]:
    """Exponential backoff with full jitter (attempt 1 -> up to base, doubling up to cap)."""

    def delay(attempt: int) -> float:
        return random.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))

    return delay


async def retry_until(
    deadline: Deadline,
    operation: Callable[[], Awaitable[T]],
    *,
    transient: tuple[type[BaseException], ...],
    what: str,
    delay: Callable[[int], float] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run ``operation`` until it succeeds, retrying ``transient`` errors until ``deadline``.

    Raises :class:`DeadlineExceeded` (chained to the last error) when the budget is spent.
    Callers must only pass operations that are safe to repeat.
    """
    next_delay = delay or backoff_delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except transient as exc:
            pause = min(next_delay(attempt), deadline.remaining())
            if deadline.remaining() - pause <= 0.0:
                raise DeadlineExceeded(
                    f"{what}: still failing after {attempt} attempts ({type(exc).__name__})"
                ) from exc
            log.warning("%s failed (%s); retry %d in %.2fs", what, type(exc).__name__, attempt, pause)
            await sleep(pause)
