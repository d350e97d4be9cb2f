"""The shared retry helper (``retry_until``) and the loops that now run on it (connect at start)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from registration.common import db
from registration.common.deadline import Deadline, DeadlineExceeded, growing_delays, retry_until
from registration.common.settings import PostgresSettings


class Clock:
    """Monotonic time that moves only when the retry loop sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def failing(times: int, error: Callable[[], BaseException] = lambda: OSError("away")) -> Callable[[], Awaitable[str]]:
    """An operation that raises ``error()`` ``times`` times, then answers "done"."""
    calls = {"n": 0}

    async def operation() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error()
        return "done"

    return operation


def run(clock: Clock, budget: float, operation: Callable[[], Awaitable[str]], **options: Any) -> str:
    deadline = Deadline(budget, clock=clock)
    return asyncio.run(
        retry_until(
            deadline, operation, transient=(OSError,), what="op", delay=lambda _: 1.0, sleep=clock.sleep, **options
        )
    )


def test_default_gives_up_with_deadline_exceeded_chained_to_the_last_error(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    with caplog.at_level(logging.WARNING), pytest.raises(DeadlineExceeded) as caught:
        run(clock, 3.0, failing(100))
    assert isinstance(caught.value.__cause__, OSError)
    assert clock.pauses == [1.0, 1.0]  # a third pause would end at the deadline
    assert [r.getMessage() for r in caplog.records] == [
        "op failed (OSError); retry 1 in 1.00s",
        "op failed (OSError); retry 2 in 1.00s",
    ]


def test_reraise_gives_up_with_the_last_error_itself() -> None:
    errors = [OSError("first"), OSError("second"), OSError("third")]
    with pytest.raises(OSError) as caught:
        run(Clock(), 2.5, failing(3, lambda: errors.pop(0)), reraise=True)
    assert str(caught.value) == "third"


def test_an_error_not_repeatable_is_raised_at_once_without_a_pause() -> None:
    clock = Clock()
    with pytest.raises(OSError):
        run(clock, 10.0, failing(5), repeatable=lambda error: str(error) != "away", reraise=True)
    assert clock.pauses == []


def test_the_reserve_stops_earlier() -> None:
    clock = Clock()
    with pytest.raises(DeadlineExceeded):
        run(clock, 3.5, failing(100), reserve=0.5)
    assert clock.pauses == [1.0, 1.0]  # without the reserve a third 1 s pause would fit (0.5 s left)
    clock = Clock()
    with pytest.raises(DeadlineExceeded):
        run(clock, 3.5, failing(100))
    assert clock.pauses == [1.0, 1.0, 1.0]


def test_on_retry_replaces_the_warning_and_on_give_up_hears_the_end(caplog: pytest.LogCaptureFixture) -> None:
    retries: list[tuple[str, int, float]] = []
    ends: list[tuple[str, int]] = []
    with caplog.at_level(logging.DEBUG), pytest.raises(DeadlineExceeded):
        run(
            Clock(),
            2.5,
            failing(100),
            on_retry=lambda error, attempt, pause: retries.append((str(error), attempt, pause)),
            on_give_up=lambda error, attempts: ends.append((str(error), attempts)),
        )
    assert retries == [("away", 1, 1.0), ("away", 2, 1.0)]
    assert ends == [("away", 3)]
    assert [r for r in caplog.records if r.name.startswith("registration")] == []


def test_a_success_after_failures_returns_its_value_and_never_calls_on_give_up() -> None:
    ends: list[int] = []
    assert run(Clock(), 10.0, failing(2), on_give_up=lambda _e, attempts: ends.append(attempts)) == "done"
    assert ends == []


def test_an_infinite_deadline_never_gives_up() -> None:
    clock = Clock()
    assert run(clock, math.inf, failing(10_000), on_retry=lambda *_: None) == "done"
    assert len(clock.pauses) == 10_000


def test_growing_delays() -> None:
    doubling = growing_delays(0.2, factor=2.0, cap=2.0)
    assert [round(doubling(n), 6) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    steady = growing_delays(1.0, factor=1.0, cap=1.0)
    assert {steady(n) for n in (1, 2, 50, 10**6)} == {1.0}
    slower = growing_delays(1.0, factor=1.5, cap=4.0)
    assert [slower(n) for n in (1, 2, 3, 4, 5)] == [1.0, 1.5, 2.25, 3.375, 4.0]
    assert slower(10**6) == 4.0  # no overflow however long it goes on
    assert growing_delays(3.0, factor=1.5, cap=1.0)(1) == 3.0  # the first pause is not capped


def test_connect_to_postgres_waits_its_max_wait_then_raises_the_error_itself(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[float] = []

    async def refuse(**_: Any) -> Any:
        attempts.append(time.monotonic())
        raise psycopg.OperationalError("connection refused (host postgres)")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", refuse)
    settings = PostgresSettings(POSTGRES_PASSWORD=SecretStr("x"))
    began = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(psycopg.OperationalError):
        asyncio.run(db.connect_with_retry(settings, retry_delay=0.05, max_wait=0.2))
    # It gives up only at a failure after max_wait (a pause before it ends is followed by one more try).
    assert time.monotonic() - began >= 0.2 and len(attempts) >= 2
    logged = [r.getMessage() for r in caplog.records if r.name == db.__name__]
    assert logged == ["PostgreSQL at postgres:5432 not ready (connection refused (host postgres)); retrying"] * (
        len(attempts) - 1
    )
