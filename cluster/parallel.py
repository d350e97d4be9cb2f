"""One function over many items at once (nodes, runs, lab containers), on one bounded pool of threads.

Every item's outcome is kept, in the items' order, and returned once all have finished: a caller
reports every failure (`HostsFailed`), not just the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from cluster.errors import HostsFailed

Item = TypeVar("Item")
T = TypeVar("T")

# Work at once: each is its own SSH connection (tunnelled through the jump host), or a channel of
# one, so a big lab's nodes and joins go together. Runs at once on one node (a bundle's image builds
# on the storage node) share its connection, where sshd allows 10 sessions (MaxSessions): this limit
# does not keep them under that.
PARALLEL_LIMIT = 16


@dataclass(frozen=True)
class Outcomes(Generic[Item, T]):
    """What `at_once` returns: each item with its result, or with the exception it raised, in the items' order."""

    results: list[tuple[Item, T]]
    failures: list[tuple[Item, Exception]]

    def raise_failures(self, step: str, name: Callable[[Item], str]) -> None:
        """Raise HostsFailed naming every item that failed (by `name`), if any did."""
        if self.failures:
            raise HostsFailed(step, {name(item): error for item, error in self.failures})


def at_once(items: Iterable[Item], work: Callable[[Item], T], *, limit: int = PARALLEL_LIMIT) -> Outcomes[Item, T]:
    """work(item) for every item, at most `limit` at a time; returns when every one has finished.

    An Exception becomes that item's outcome; anything else (KeyboardInterrupt) goes up."""
    items = list(items)
    results: list[tuple[Item, T]] = []
    failures: list[tuple[Item, Exception]] = []
    if not items:
        return Outcomes(results, failures)
    with ThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
        futures = [(item, pool.submit(work, item)) for item in items]
        for item, future in futures:
            try:
                results.append((item, future.result()))
            except Exception as error:  # kept: the caller reports every failure together
                failures.append((item, error))
    return Outcomes(results, failures)
