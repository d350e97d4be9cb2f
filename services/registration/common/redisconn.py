"""Redis client construction (password, if any, from REDIS_PASSWORD_FILE)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from registration.common.settings import RedisSettings


def make_redis(settings: RedisSettings) -> aioredis.Redis:
    return aioredis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        password=settings.password.get_secret_value() if settings.password is not None else None,
        decode_responses=True,
        socket_connect_timeout=3,
        socket_timeout=5,
        health_check_interval=30,
        # One immediate retry (a pooled connection that died with a restarted server); longer
        # outages are retried by the callers within the request's deadline, with backoff.
        retry=Retry(NoBackoff(), 1),
    )
