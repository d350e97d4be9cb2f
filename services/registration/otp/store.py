"""Redis implementation of :class:`registration.otp.rules.OtpStore`."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis

ELIGIBLE_KEY = "otp:eligible"


def _k(kind: str, email: str) -> str:
    return f"otp:{kind}:{email}"


class RedisOtpStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client

    async def add_eligible(self, emails: Iterable[str]) -> int:
        members = list(emails)
        if not members:
            return 0
        return int(await self._r.sadd(ELIGIBLE_KEY, *members))

    async def count_eligible(self) -> int:
        return int(await self._r.scard(ELIGIBLE_KEY))

    async def is_eligible(self, email: str) -> bool:
        return bool(await self._r.sismember(ELIGIBLE_KEY, email))

    async def put_otp(self, email: str, value: str, ttl: int) -> None:
        await self._r.set(_k("code", email), value, ex=ttl)

    async def get_otp(self, email: str) -> str | None:
        value = await self._r.get(_k("code", email))
        return None if value is None else str(value)

    async def delete_otp(self, email: str) -> bool:
        return int(await self._r.delete(_k("code", email))) == 1

    async def incr_failures(self, email: str, ttl: int) -> int:
        key = _k("fail", email)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, ttl, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def reset_failures(self, email: str) -> None:
        await self._r.delete(_k("fail", email))

    async def set_locked(self, email: str, ttl: int) -> None:
        await self._r.set(_k("lock", email), "1", ex=ttl)

    async def is_locked(self, email: str) -> bool:
        return int(await self._r.exists(_k("lock", email))) == 1

    async def set_authenticated(self, email: str, ttl: int) -> None:
        await self._r.set(_k("auth", email), "1", ex=ttl)

    async def is_authenticated(self, email: str) -> bool:
        return int(await self._r.exists(_k("auth", email))) == 1

    async def consume_authenticated(self, email: str) -> bool:
        return int(await self._r.delete(_k("auth", email))) == 1

    async def forget(self, email: str) -> None:
        """otp.delete(email): drop every per-e-mail key (OTP, failures, marker; not the lock)."""
        await self._r.delete(_k("code", email), _k("fail", email), _k("auth", email))
