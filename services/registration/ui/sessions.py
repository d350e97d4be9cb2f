"""Server-side sessions: a random id in an HttpOnly cookie, the data as JSON in Redis with a TTL.

Any UI replica can serve any request, so a user keeps their place while UI containers are
replaced during a rolling update. The id changes (:meth:`SessionStore.rotate`) at every step that
raises the session's privilege, against session fixation.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from registration.common.deadline import Deadline, growing_delays, retry_until

T = TypeVar("T")
SESSION_COOKIE = "regsid"
# The session Redis is one stop-first task: while Swarm moves it (a drained or lost worker) it is away
# for seconds. A page waits for it within this budget instead of failing (then: SessionsAway, a 503).
OUTAGE_BUDGET = 20.0
_AWAY = (RedisConnectionError, RedisTimeoutError, OSError)
_PACE = growing_delays(0.2, factor=2.0, cap=2.0)  # 0.2, 0.4, 0.8, 1.6, then 2 s


def _unlogged(error: BaseException, attempt: int, pause: float) -> None:
    pass


class SessionsAway(Exception):
    """The session store did not answer within the outage budget."""


_SID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32)


class KeyValue(Protocol):
    def get(self, name: str) -> Awaitable[Any]: ...
    def set(self, name: str, value: str, ex: int | None = None) -> Awaitable[Any]: ...
    def delete(self, *names: str) -> Awaitable[Any]: ...


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def valid_session_id(sid: str | None) -> bool:
    return sid is not None and _SID_RE.fullmatch(sid) is not None


class SessionStore:
    def __init__(self, kv: KeyValue, ttl: int, outage_budget: float = OUTAGE_BUDGET) -> None:
        self._kv = kv
        self.ttl = ttl
        self.outage_budget = outage_budget

    async def _ride_out(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Every session operation is safe to repeat (get, set of the whole value, delete)."""
        try:
            return await retry_until(
                Deadline(self.outage_budget),
                operation,
                transient=_AWAY,
                what="session store",
                delay=_PACE,
                reraise=True,
                on_retry=_unlogged,  # a page that waited says nothing; one that gave up is a 503
            )
        except _AWAY as error:
            raise SessionsAway(type(error).__name__) from error

    @staticmethod
    def _key(sid: str) -> str:
        return f"session:{sid}"

    async def load(self, sid: str | None) -> dict[str, Any]:
        if not valid_session_id(sid):
            return {}
        assert sid is not None
        raw = await self._ride_out(lambda: self._kv.get(self._key(sid)))
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def save(self, sid: str, data: dict[str, Any]) -> None:
        text = json.dumps(data)
        await self._ride_out(lambda: self._kv.set(self._key(sid), text, ex=self.ttl))

    async def delete(self, sid: str) -> None:
        await self._ride_out(lambda: self._kv.delete(self._key(sid)))

    async def rotate(self, sid: str) -> str:
        """A new id for the session (the caller saves the data under it); the old id stops working.

        Called whenever the session gains privilege (an OTP requested for an e-mail, the OTP
        verified), so an id planted in a victim's browser beforehand is worth nothing.
        """
        await self.delete(sid)
        return new_session_id()
