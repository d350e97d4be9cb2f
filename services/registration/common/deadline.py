"""Request deadlines and retry with backoff, shared by the API, the UI and the workers.

A request has one time budget (``REQUEST_DEADLINE``, 60 s by default): long enough to ride out a
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


def growing_delays(first: float, *, factor: float, cap: float) -> Callable[[int], float]:
    """Pauses without jitter: ``first`` after attempt 1, then times ``factor`` per attempt, at most ``cap``
    (``first`` itself is not capped). ``factor`` 1 gives a steady pace."""

    def delay(attempt: int) -> float:
        if attempt <= 1:
            return first
        try:
            return min(cap, first * factor ** (attempt - 1))
        except OverflowError:  # a retry that goes on for ever reached the cap long ago
            return cap

    return delay


# Called before each pause with (the error, the attempt that failed, the pause in seconds).
OnRetry = Callable[[BaseException, int, float], None]
# Called once when retrying stops for lack of time, with (the last error, the attempts made).
OnGiveUp = Callable[[BaseException, int], None]


async def retry_until(
    deadline: Deadline,
    operation: Callable[[], Awaitable[T]],
    *,
    transient: tuple[type[BaseException], ...],
    what: str,
    delay: Callable[[int], float] | None = None,
    sleep: Sleep = asyncio.sleep,
    repeatable: Callable[[BaseException], bool] | None = None,
    reserve: float = 0.0,
    on_retry: OnRetry | None = None,
    on_give_up: OnGiveUp | None = None,
    reraise: bool = False,
) -> T:
    """Run ``operation`` until it succeeds, retrying ``transient`` errors until ``deadline``.

    Raises :class:`DeadlineExceeded` (chained to the last error) when the budget is spent, or the
    last error itself with ``reraise``. A transient error for which ``repeatable`` says False is
    raised at once. Retrying stops when no more than ``reserve`` seconds would be left after the
    next pause. ``on_retry`` replaces the default warning logged before each pause. A
    ``Deadline(math.inf)`` retries for ever. Callers must only pass operations that are safe to repeat.
    """
    next_delay = delay or backoff_delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except transient as exc:
            if repeatable is not None and not repeatable(exc):
                raise
            pause = min(next_delay(attempt), deadline.remaining())
            if deadline.remaining() - pause <= reserve:
                if on_give_up is not None:
                    on_give_up(exc, attempt)
                if reraise:
                    raise
                raise DeadlineExceeded(
                    f"{what}: still failing after {attempt} attempts ({type(exc).__name__})"
                ) from exc
            if on_retry is None:
                log.warning("%s failed (%s); retry %d in %.2fs", what, type(exc).__name__, attempt, pause)
            else:
                on_retry(exc, attempt, pause)
            await sleep(pause)
