"""In-memory fakes shared by the service unit tests (no Redis, RabbitMQ or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from registration.common.rpc import RpcTimeout
from registration.enroll.logic import INSERT_ENROLL_SQL, insert_enroll
from registration.otp.rules import OtpPolicy
from registration.otp.service import OtpService
from registration.student.logic import INSERT_STUDENT_SQL, insert_student


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryOtpStore:
    """Implements registration.otp.rules.OtpStore with TTLs driven by a FakeClock."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.eligible: set[str] = set()
        self._kv: dict[str, tuple[str, float | None]] = {}

    def _get(self, key: str) -> str | None:
        item = self._kv.get(key)
        if item is None:
            return None
        value, exp = item
        if exp is not None and self.clock() >= exp:
            del self._kv[key]
            return None
        return value

    def _set(self, key: str, value: str, ttl: int | None) -> None:
        self._kv[key] = (value, None if ttl is None else self.clock() + ttl)

    def _del(self, key: str) -> bool:
        present = self._get(key) is not None
        self._kv.pop(key, None)
        return present

    async def add_eligible(self, emails: Iterable[str]) -> int:
        before = len(self.eligible)
        self.eligible.update(emails)
        return len(self.eligible) - before

    async def count_eligible(self) -> int:
        return len(self.eligible)

    async def is_eligible(self, email: str) -> bool:
        return email in self.eligible

    async def put_otp(self, email: str, value: str, ttl: int) -> None:
        self._set(f"code:{email}", value, ttl)

    async def get_otp(self, email: str) -> str | None:
        return self._get(f"code:{email}")

    async def delete_otp(self, email: str) -> bool:
        return self._del(f"code:{email}")

    async def incr_failures(self, email: str, ttl: int) -> int:
        key = f"fail:{email}"
        current = self._get(key)
        if current is None:
            self._set(key, "1", ttl)
            return 1
        value, exp = self._kv[key]
        self._kv[key] = (str(int(value) + 1), exp)
        return int(value) + 1

    async def reset_failures(self, email: str) -> None:
        self._del(f"fail:{email}")

    async def set_locked(self, email: str, ttl: int) -> None:
        self._set(f"lock:{email}", "1", ttl)

    async def is_locked(self, email: str) -> bool:
        return self._get(f"lock:{email}") is not None

    async def set_authenticated(self, email: str, ttl: int) -> None:
        self._set(f"auth:{email}", "1", ttl)

    async def is_authenticated(self, email: str) -> bool:
        return self._get(f"auth:{email}") is not None

    async def consume_authenticated(self, email: str) -> bool:
        return self._del(f"auth:{email}")

    def peek_code(self, email: str) -> str | None:
        raw = self._get(f"code:{email}")
        return None if raw is None else raw.partition(":")[0]


class FakeDb:
    """Executes the two INSERTs of the student/enroll logic like PostgreSQL would."""

    def __init__(self) -> None:
        self.students: dict[str, tuple[int, str, str]] = {}
        self.enrolls: list[tuple[int, int, str, str]] = []

    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        if sql == INSERT_STUDENT_SQL:
            first, last, email = params
            if email in self.students:  # UNIQUE (email) + ON CONFLICT DO NOTHING -> no row
                return None
            sid = len(self.students) + 1
            self.students[email] = (sid, first, last)
            return (sid,)
        if sql == INSERT_ENROLL_SQL:
            student_id, first, last = params
            if student_id not in {s[0] for s in self.students.values()}:
                raise RuntimeError("foreign key violation")
            eid = len(self.enrolls) + 1
            self.enrolls.append((eid, student_id, first, last))
            return (eid,)
        raise AssertionError(f"unexpected SQL {sql!r}")


class FakeBackend:
    """Stands in for RabbitMQ + every worker, behind the RpcCaller interface."""

    def __init__(self, policy: OtpPolicy | None = None) -> None:
        self.store = MemoryOtpStore()
        self.otp = OtpService(self.store, policy or OtpPolicy())
        self.db = FakeDb()
        self.otp_mails: list[dict[str, Any]] = []
        self.confirmations: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.timeout_on: set[tuple[str, str]] = set()

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        self.calls.append((service, method, kwargs))
        if (service, method) in self.timeout_on:
            raise RpcTimeout(f"{service}.{method} timed out")
        if service == "otp":
            return await self.otp.handlers()[method](**kwargs)
        if service == "email_otp" and method == "send":
            self.otp_mails.append(kwargs)
            return "sent"
        if service == "student" and method == "insert":
            return await insert_student(self.db, **kwargs)
        if service == "enroll" and method == "insert":
            return await insert_enroll(self.db, **kwargs)
        if service == "email" and method == "send":
            self.confirmations.append(kwargs)
            return "sent"
        raise AssertionError(f"unexpected call {service}.{method}")

    def last_otp_for(self, email: str) -> str:
        for mail in reversed(self.otp_mails):
            if mail["email"] == email:
                return str(mail["otp"])
        raise AssertionError(f"no OTP mail for {email}")
