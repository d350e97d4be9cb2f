"""Fakes shared by the service unit tests (no Redis server, RabbitMQ or PostgreSQL).

* The OTP store is the real :class:`RedisOtpStore` on fakeredis (which runs Lua), so the atomic
  scripts themselves are what the tests exercise.
* :class:`FakeDb` answers the workers' SQL like PostgreSQL would, with transactions (rolled back
  on error) and injectable connection failures, behind the real
  :class:`registration.common.db.Database` (so reconnects and retries are the real code).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import fakeredis
import psycopg
from pydantic import SecretStr

from registration.common.db import Database
from registration.common.deadline import Deadline, reset_current_deadline, set_current_deadline
from registration.common.once import Once
from registration.common.rpc import RpcRemoteError, RpcTimeout, RpcUnavailable
from registration.common.settings import PostgresSettings
from registration.enroll.logic import INSERT_ENROLL_SQL, insert_enroll
from registration.otp.rules import CodeDigest, OtpPolicy
from registration.otp.service import OtpService
from registration.otp.store import RedisOtpStore
from registration.student.logic import (
    INSERT_ENROLL_FOR_STUDENT_SQL,
    INSERT_STUDENT_ONLY_SQL,
    INSERT_STUDENT_SQL,
    SELECT_STUDENT_SQL,
    find_registration,
    register_student,
)

# The otp worker's HMAC key of the tests (the stack's is the otp_digest_key Docker secret).
DIGEST = CodeDigest(b"unit-test-otp-digest-key")


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def redis_store() -> tuple[RedisOtpStore, fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return RedisOtpStore(client), client


class _Cursor:
    def __init__(self, row: tuple[Any, ...] | None) -> None:
        self._row = row

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self._row


class FakeDb:
    """The database: state, SQL semantics, and failures to inject."""

    def __init__(self) -> None:
        self.students: dict[str, tuple[int, str, str, str | None]] = {}
        self.enrolls: list[tuple[int, int, str, str]] = []
        self.refuse_connects = 0  # the next N connects fail (server away)
        self.drop_after_commit = 0  # the next N commits succeed, then the connection drops
        self.connects = 0
        self.commits = 0

    def execute_sql(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        if sql == INSERT_STUDENT_SQL:
            first, last, email, key = params
            if email in self.students:  # UNIQUE (email) + ON CONFLICT DO NOTHING -> no row
                return None
            sid = len(self.students) + 1
            self.students[email] = (sid, first, last, key)
            return (sid,)
        if sql == INSERT_STUDENT_ONLY_SQL:
            first, last, email = params
            if email in self.students:
                return None
            sid = len(self.students) + 1
            self.students[email] = (sid, first, last, None)
            return (sid,)
        if sql == SELECT_STUDENT_SQL:
            (email,) = params
            found = self.students.get(email)
            return None if found is None else (found[0], found[3])
        if sql in (INSERT_ENROLL_FOR_STUDENT_SQL, INSERT_ENROLL_SQL):
            student_id, first, last = params[:3]
            if student_id not in {s[0] for s in self.students.values()}:
                raise psycopg.errors.ForeignKeyViolation("foreign key violation")
            for eid, sid, _, _ in self.enrolls:
                if sid == student_id:  # UNIQUE (student_id) + ON CONFLICT DO NOTHING
                    return (eid,) if sql == INSERT_ENROLL_SQL else None
            eid = len(self.enrolls) + 1
            self.enrolls.append((eid, student_id, first, last))
            return (eid,) if sql == INSERT_ENROLL_SQL else None
        raise AssertionError(f"unexpected SQL {sql!r}")

    async def connect(self, _settings: PostgresSettings) -> FakeConnection:
        self.connects += 1
        if self.refuse_connects > 0:
            self.refuse_connects -= 1
            raise psycopg.OperationalError("connection refused")
        return FakeConnection(self)


class _Transaction:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.snapshot: tuple[Any, Any] = ({}, [])

    async def __aenter__(self) -> None:
        db = self.conn.db
        self.snapshot = (copy.deepcopy(db.students), copy.deepcopy(db.enrolls))

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        db = self.conn.db
        if exc_type is not None:  # ROLLBACK
            db.students, db.enrolls = self.snapshot
            return
        db.commits += 1
        if db.drop_after_commit > 0:  # COMMIT done on the server; the client never hears of it
            db.drop_after_commit -= 1
            self.conn.closed = True
            raise psycopg.OperationalError("server closed the connection unexpectedly")


class FakeConnection:
    def __init__(self, db: FakeDb) -> None:
        self.db = db
        self.closed = False

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    async def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Cursor:
        if self.closed:
            raise psycopg.OperationalError("the connection is closed")
        return _Cursor(self.db.execute_sql(sql, params or ()))

    async def close(self) -> None:
        self.closed = True


def fake_database(db: FakeDb) -> Database:
    return Database(PostgresSettings(POSTGRES_PASSWORD=SecretStr("x")), connect=db.connect)


class FakeBackend:
    """Stands in for RabbitMQ + every worker, behind the RpcCaller interface.

    The workers' real handler code runs: the OTP service on the Lua store, the register
    transaction on :class:`Database` over :class:`FakeDb`, the mailers' at-most-once guard.
    """

    def __init__(self, policy: OtpPolicy | None = None, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.store, self.redis = redis_store()
        self.otp = OtpService(self.store, policy or OtpPolicy(), DIGEST, clock=self.clock)
        self.db = FakeDb()
        self.database = fake_database(self.db)
        self.otp_mails: list[dict[str, Any]] = []
        self.confirmations: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.timeout_on: set[tuple[str, str]] = set()
        # (service, method) -> errors to raise on the next calls, one per call, before handling
        self.fail_before: dict[tuple[str, str], list[Exception]] = {}
        # (service, method) -> errors to raise on the next calls after handling (a lost reply)
        self.fail_after: dict[tuple[str, str], list[Exception]] = {}
        self._once_otp: Once[str] = Once()
        self._once_confirm: Once[str] = Once()

    async def _handle(self, service: str, method: str, kwargs: dict[str, Any]) -> Any:
        if service == "otp":
            return await self.otp.handlers()[method](**kwargs)
        if service == "email_otp" and method == "send":
            mail = dict(kwargs)

            async def send_otp() -> str:
                self.otp_mails.append(mail)
                return "sent"

            return await self._once_otp.run(f"{mail['email']}\0{mail['otp']}", send_otp)
        if service == "student" and method == "register":
            return await register_student(self.database, **kwargs)
        if service == "student" and method == "find":
            return await find_registration(self.database, **kwargs)
        if service == "enroll" and method == "insert":
            return await insert_enroll(self.database, **kwargs)
        if service == "email" and method == "send":
            mail = dict(kwargs)

            async def send_confirmation() -> str:
                self.confirmations.append({k: v for k, v in mail.items() if k != "key"})
                return "sent"

            return await self._once_confirm.run(str(mail.get("key")), send_confirmation)
        raise AssertionError(f"unexpected call {service}.{method}")

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        self.calls.append((service, method, kwargs))
        if (service, method) in self.timeout_on:
            raise RpcTimeout(f"{service}.{method} timed out")
        before = self.fail_before.get((service, method))
        if before:
            raise before.pop(0)
        # as the RPC server does: the worker's own retries stop when the caller stops waiting
        token = set_current_deadline(None if timeout is None else Deadline(timeout))
        try:
            result = await self._handle(service, method, kwargs)
        finally:
            reset_current_deadline(token)
        after = self.fail_after.get((service, method))
        if after:
            raise after.pop(0)
        return result

    def last_otp_for(self, email: str) -> str:
        for mail in reversed(self.otp_mails):
            if mail["email"] == email:
                return str(mail["otp"])
        raise AssertionError(f"no OTP mail for {email}")

    def calls_to(self, service: str, method: str) -> int:
        return sum(1 for s, m, _ in self.calls if (s, m) == (service, method))


__all__ = [
    "DIGEST",
    "FakeBackend",
    "FakeClock",
    "FakeDb",
    "RpcRemoteError",
    "RpcTimeout",
    "RpcUnavailable",
    "fake_database",
    "redis_store",
]
