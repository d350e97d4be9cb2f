"""At most once per key (per process): the mail workers' guard against sending a mail twice
when the same request is delivered again (an API retry after a lost reply, a redelivery by the
broker after a lost acknowledgement).

In memory on purpose: the mail workers have no store. With several replicas a repeat that
lands on another replica can still send a second mail, which is the price of not losing one.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Once(Generic[T]):
    def __init__(
        self, ttl: float = 900.0, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max = max_keys
        self._clock = clock
        self._done: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._running: dict[str, asyncio.Future[T]] = {}

    def _expire(self) -> None:
        now = self._clock()
        while self._done:
            key, (at, _) = next(iter(self._done.items()))
            if now - at < self._ttl and len(self._done) <= self._max:
                break
            del self._done[key]

    async def run(self, key: str, operation: Callable[[], Awaitable[T]]) -> T:
        """The result of ``operation`` for ``key``: run once; repeats get the first success.

        A failure is not remembered, so a repeat after a failure runs again.
        """
        self._expire()
        if key in self._done:
            return self._done[key][1]
        running = self._running.get(key)
        if running is not None:  # the same request, delivered twice at once: wait for the first
            return await asyncio.shield(running)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await operation()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(result)
            self._done[key] = (self._clock(), result)
            return result
        finally:
            del self._running[key]
