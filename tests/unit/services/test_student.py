from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import pytest

from registration.common.db import MIGRATIONS, migrate
from registration.enroll.logic import insert_enroll
from registration.student.logic import INSERT_STUDENT_SQL, insert_student
from tests.unit.services.fakes import FakeDb


def test_insert_then_duplicate_refused() -> None:
    fake = FakeDb()
    first = asyncio.run(insert_student(fake, "Ann", "Lee", "ann@example.org"))
    assert first == {"status": "created", "student_id": 1}
    again = asyncio.run(insert_student(fake, "Annie", "Lee", " ANN@example.org "))
    assert again == {"status": "already_registered"}
    assert fake.students == {"ann@example.org": (1, "Ann", "Lee")}


def test_duplicate_check_is_done_by_the_database() -> None:
    # no check-then-insert race: the unique constraint decides, and a conflict returns no row
    assert "ON CONFLICT (email) DO NOTHING RETURNING id" in INSERT_STUDENT_SQL
    schema = " ".join(sql for _, sql in MIGRATIONS)
    assert re.search(r"UNIQUE \(email\)", schema)
    assert re.search(r"student_id\s+BIGINT NOT NULL REFERENCES student \(id\)", schema)


def test_names_are_validated() -> None:
    fake = FakeDb()
    with pytest.raises(ValueError):
        asyncio.run(insert_student(fake, "   ", "Lee", "x@example.org"))
    out = asyncio.run(insert_student(fake, "  Mary   Ann ", "Lee", "m@example.org"))
    assert out["status"] == "created"
    assert fake.students["m@example.org"][1] == "Mary Ann"


def test_enroll_references_student() -> None:
    fake = FakeDb()
    sid = asyncio.run(insert_student(fake, "Ann", "Lee", "ann@example.org"))["student_id"]
    assert asyncio.run(insert_enroll(fake, sid, "Ann", "Lee")) == {"status": "created", "enroll_id": 1}
    with pytest.raises(ValueError):
        asyncio.run(insert_enroll(fake, 0, "Ann", "Lee"))


class _Cursor:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class _Tx:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    async def __aenter__(self) -> None:
        self.conn.log.append("BEGIN")

    async def __aexit__(self, *exc: object) -> None:
        self.conn.log.append("COMMIT" if exc[0] is None else "ROLLBACK")


class FakeConn:
    """Records SQL; keeps schema_migrations rows like a database would."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.versions: set[int] = set()

    def transaction(self) -> _Tx:
        return _Tx(self)

    async def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Cursor:
        self.log.append(sql.strip().split()[0] + (" LOCK" if "advisory" in sql else ""))
        if sql.startswith("SELECT version FROM schema_migrations"):
            return _Cursor([(v,) for v in sorted(self.versions)])
        if sql.startswith("INSERT INTO schema_migrations"):
            assert params is not None
            self.versions.add(int(params[0]))
        return _Cursor([])


def test_migrations_take_the_advisory_lock_first_and_are_idempotent() -> None:
    conn = FakeConn()
    applied = asyncio.run(migrate(conn))  # type: ignore[arg-type]
    assert applied == [v for v, _ in MIGRATIONS]
    assert conn.log[0] == "BEGIN"
    assert conn.log[1] == "SELECT LOCK"  # pg_advisory_xact_lock before any DDL
    assert conn.log[-1] == "COMMIT"
    conn.log.clear()
    assert asyncio.run(migrate(conn)) == []  # type: ignore[arg-type]  # second run: nothing to do
    assert "CREATE" in conn.log  # only the IF NOT EXISTS of schema_migrations
    assert conn.log.count("CREATE") == 1


def test_migration_sql_is_rerunnable() -> None:
    for _, sql in MIGRATIONS:
        for stmt in filter(None, (s.strip() for s in sql.split(";"))):
            assert "IF NOT EXISTS" in stmt, stmt
