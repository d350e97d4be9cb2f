"""PostgreSQL access for the student and enroll workers (psycopg 3, async).

The schema is created by idempotent, versioned migrations run at start inside one transaction
that holds a transaction-scoped advisory lock, so running them twice, or from two replicas
starting at the same time, is safe: the second waits, then finds every version applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg.rows import tuple_row

from registration.common.settings import PostgresSettings

log = logging.getLogger(__name__)

# Arbitrary constant identifying "registration schema migrations" among advisory locks.
MIGRATION_LOCK_ID: Final = 0x5245_4749  # "REGI"

MIGRATIONS: Final[Sequence[tuple[int, str]]] = (
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS student (
            id          BIGSERIAL PRIMARY KEY,
            firstname   TEXT NOT NULL,
            lastname    TEXT NOT NULL,
            email       TEXT NOT NULL,
            created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
            CONSTRAINT student_email_key UNIQUE (email)
        );
        CREATE TABLE IF NOT EXISTS enroll (
            id          BIGSERIAL PRIMARY KEY,
            student_id  BIGINT NOT NULL REFERENCES student (id),
            firstname   TEXT NOT NULL,
            lastname    TEXT NOT NULL,
            created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS enroll_student_id_idx ON enroll (student_id);
        """,
    ),
)


def conninfo_kwargs(settings: PostgresSettings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "dbname": settings.dbname,
        "user": settings.user,
        "password": settings.password.get_secret_value(),
        "connect_timeout": settings.connect_timeout,
        "application_name": "registration",
    }


async def connect_with_retry(
    settings: PostgresSettings, *, retry_delay: float = 2.0, max_wait: float = 0.0
) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    """Connect (autocommit), retrying until PostgreSQL is up (forever when ``max_wait`` <= 0)."""
    deadline = time.monotonic() + max_wait if max_wait > 0 else None
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                autocommit=True, row_factory=tuple_row, **conninfo_kwargs(settings)
            )
        except psycopg.OperationalError as exc:
            if deadline is not None and time.monotonic() > deadline:
                raise
            # psycopg's message names host/port/user, never the password
            log.warning("PostgreSQL at %s:%s not ready (%s); retrying", settings.host, settings.port, exc)
            await asyncio.sleep(retry_delay)
            continue
        return conn


async def migrate(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> list[int]:
    """Apply the missing migrations; returns the versions applied by this call."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
    if applied_now:
        log.info("applied schema migrations %s", applied_now)
    else:
        log.info("schema up to date")
    return applied_now


class Database:
    """One autocommit connection, serialised, re-opened after a connection failure."""

    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._conn = await connect_with_retry(self._settings)
        await migrate(self._conn)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        async with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = await connect_with_retry(self._settings, max_wait=30)
                try:
                    cur = await self._conn.execute(sql, params)
                    return await cur.fetchone()
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    log.warning("database connection lost; reconnecting")
                    await self._conn.close()
                    self._conn = None
        return None
