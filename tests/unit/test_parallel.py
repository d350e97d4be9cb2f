"""The one parallel helper: results in the items' order, every failure kept, never more at once than the limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import pytest

from cluster.errors import HostsFailed
from cluster.parallel import PARALLEL_LIMIT, at_once


def test_results_come_back_in_the_order_of_the_items_not_of_finishing() -> None:
    def slow_first(n: int) -> str:
        time.sleep(0.01 * (5 - n))  # the first item finishes last
        return f"item {n}"

    outcomes = at_once(range(5), slow_first)
    assert outcomes.results == [(n, f"item {n}") for n in range(5)]
    assert outcomes.failures == []


def test_every_failure_is_kept_and_the_others_still_run() -> None:
    ran: list[int] = []
    errors = {n: RuntimeError(f"failed {n}") for n in (1, 3, 4)}

    def work(n: int) -> int:
        ran.append(n)
        if n in errors:
            raise errors[n]
        return n * 10

    outcomes = at_once(range(6), work, limit=2)
    assert sorted(ran) == list(range(6))
    assert outcomes.results == [(0, 0), (2, 20), (5, 50)]
    assert outcomes.failures == [(n, errors[n]) for n in (1, 3, 4)]


def _peak(items: int, limit: int, run: Callable[[Iterable[int], Callable[[int], None]], object]) -> int:
    """How many of `items` ran at once under `run`; the first ones hold on until `limit` run (more would show)."""
    lock = threading.Lock()
    running = [0]
    peak = [0]
    full = threading.Event()

    def work(_: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            if running[0] >= limit:
                full.set()
        full.wait(timeout=5)
        time.sleep(0.01)
        with lock:
            running[0] -= 1

    run(range(items), work)
    return peak[0]


def test_as_many_run_at_once_as_the_limit_allows_and_no_more() -> None:
    assert _peak(10, 3, lambda items, work: at_once(items, work, limit=3)) == 3
    assert _peak(PARALLEL_LIMIT + 4, PARALLEL_LIMIT, at_once) == PARALLEL_LIMIT  # the default


def test_no_items_runs_nothing() -> None:
    nothing: list[str] = []
    outcomes = at_once(nothing, lambda item: pytest.fail("nothing to run"))
    assert outcomes.results == [] and outcomes.failures == []
    outcomes.raise_failures("nothing", str)  # no failure: no error


def test_failures_are_raised_together_named_by_the_caller() -> None:
    def work(name: str) -> None:
        if name != "worker-2":
            raise RuntimeError(f"{name} is down")

    outcomes = at_once(["worker-3", "worker-1", "worker-2"], work)
    with pytest.raises(HostsFailed) as caught:
        outcomes.raise_failures("workers join", lambda name: f"{name} (join)")
    assert str(caught.value) == (
        "workers join failed on 2 host(s):\n- worker-1 (join): worker-1 is down\n- worker-3 (join): worker-3 is down"
    )
    assert list(caught.value.failures) == ["worker-3 (join)", "worker-1 (join)"]


def test_an_interrupt_is_not_kept_as_an_outcome() -> None:
    def work(n: int) -> int:
        if n == 1:
            raise KeyboardInterrupt
        return n

    with pytest.raises(KeyboardInterrupt):
        at_once(range(3), work)
