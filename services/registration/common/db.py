"""PostgreSQL access for the student and enroll workers (psycopg 3, async).

The schema is created by idempotent, versioned migrations run at start inside one transaction
that holds a transaction-scoped advisory lock, so running them twice, or from two replicas
starting at the same time, is safe: the second waits, then finds every version applied.

Work is done in transactions (:meth:`Database.run`) that reconnect and run again when the
connection is lost, until the request's deadline. A connection can drop after PostgreSQL
committed but before the client heard so; every transaction run this way must therefore be
idempotent (the register transaction is keyed by the e-mail and the request's idempotency key).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

import psycopg
from psycopg.rows import tuple_row

from registration.common.deadline import Deadline, current_deadline, growing_delays, retry_until
from registration.common.settings import PostgresSettings

T = TypeVar("T")

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
    (
        2,
        # Idempotent registration: the request's key on the student row (NULL for rows written
        # before), and one enrolment per student. Databases of the first version may hold
        # duplicate enrolments (a retried enroll.insert); keep the oldest before the unique index.
        """
        ALTER TABLE student ADD COLUMN IF NOT EXISTS request_key TEXT;
        DELETE FROM enroll e USING enroll d WHERE e.student_id = d.student_id AND e.id > d.id;
        CREATE UNIQUE INDEX IF NOT EXISTS enroll_student_id_key ON enroll (student_id);
        DROP INDEX IF EXISTS enroll_student_id_idx;
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
    settings: PostgresSettings, *, retry_delay: float = 1.0, max_wait: float = 0.0
) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    """Connect (autocommit), retrying until PostgreSQL is up (forever when ``max_wait`` <= 0)."""
    # As before: a failure after ``max_wait`` gives up, one before it pauses and tries again (the
    # deadline is one pause later).
    deadline = Deadline(max_wait + retry_delay if max_wait > 0 else math.inf)

    def retrying(error: BaseException, attempt: int, pause: float) -> None:
        # psycopg's message names host/port/user, never the password
        log.warning("PostgreSQL at %s:%s not ready (%s); retrying", settings.host, settings.port, error)

    return await retry_until(
        deadline,
        lambda: _connect_once(settings),
        transient=(psycopg.OperationalError,),
        what="PostgreSQL connection",
        delay=growing_delays(retry_delay, factor=1.0, cap=retry_delay),
        on_retry=retrying,
        reraise=True,
    )


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


class Cursor(Protocol):
    async def fetchone(self) -> tuple[Any, ...] | None: ...


class Executor(Protocol):
    """What a transaction body may use: run one statement, then fetch its first row."""

    async def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any: ...


Connect = Callable[[PostgresSettings], Awaitable[Any]]


async def _connect_once(settings: PostgresSettings) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    return await psycopg.AsyncConnection.connect(autocommit=True, row_factory=tuple_row, **conninfo_kwargs(settings))


class Database:
    """One autocommit connection, serialised; transactions re-run on a new connection after a
    connection failure, with backoff, until the request's deadline."""

    def __init__(self, settings: PostgresSettings, *, connect: Connect = _connect_once) -> None:
        self._settings = settings
        self._connect = connect
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._conn = await connect_with_retry(self._settings)
        await migrate(self._conn)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # it is broken already; we only drop it
                log.debug("closing a broken connection: %s", type(exc).__name__)

    async def run(self, body: Callable[[Executor], Awaitable[T]], *, what: str = "transaction") -> T:
        """Run ``body`` in one transaction, reconnecting and running it again after a connection
        failure until the current request's deadline. ``body`` must be idempotent."""
        deadline = current_deadline()

        async def attempt() -> T:
            if self._conn is None or self._conn.closed:
                self._conn = await asyncio.wait_for(self._connect(self._settings), max(0.1, deadline.remaining()))
            conn = self._conn
            try:
                async with conn.transaction():
                    return await body(conn)
            except (psycopg.OperationalError, TimeoutError):
                # Lost (server stopped or moving) or unusable: the next attempt reconnects. If the
                # COMMIT was lost in flight, the idempotent body finds its own rows next time.
                await self._drop()
                raise

        async with self._lock:
            return await retry_until(deadline, attempt, transient=(psycopg.OperationalError, TimeoutError), what=what)

    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """One statement in its own transaction (retried like :meth:`run`: it must be idempotent)."""

        async def body(conn: Executor) -> tuple[Any, ...] | None:
            cur = await conn.execute(sql, params)
            row: tuple[Any, ...] | None = await cur.fetchone()
            return row

        return await self.run(body, what=sql.split(None, 1)[0].lower())
