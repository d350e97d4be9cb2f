from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from registration.common.db import MIGRATIONS, migrate
from registration.common.deadline import Deadline, DeadlineExceeded, reset_current_deadline, set_current_deadline
from registration.enroll.logic import insert_enroll
from registration.student.logic import (
    INSERT_ENROLL_FOR_STUDENT_SQL,
    INSERT_STUDENT_SQL,
    find_registration,
    insert_student,
    register_student,
)
from tests.unit.services.fakes import FakeDb, fake_database


def register(db: FakeDb, first: str, last: str, email: str, key: str) -> dict[str, Any]:
    return asyncio.run(register_student(fake_database(db), first, last, email, key))


def test_register_then_duplicate_refused() -> None:
    fake = FakeDb()
    first = register(fake, "Ann", "Lee", "ann@example.org", "k1")
    assert first == {"status": "created", "student_id": 1, "replayed": False}
    again = register(fake, "Annie", "Lee", " ANN@example.org ", "k2")
    assert again == {"status": "already_registered"}
    assert fake.students == {"ann@example.org": (1, "Ann", "Lee", "k1")}
    assert fake.enrolls == [(1, 1, "Ann", "Lee")]


def test_the_same_request_again_gets_the_same_answer_and_no_second_row() -> None:
    fake = FakeDb()
    first = register(fake, "Ann", "Lee", "ann@example.org", "k1")
    again = register(fake, "Ann", "Lee", "ann@example.org", "k1")
    assert again == {"status": "created", "student_id": first["student_id"], "replayed": True}
    assert len(fake.students) == 1 and len(fake.enrolls) == 1
    found = asyncio.run(find_registration(fake_database(fake), "ann@example.org", "k1"))
    assert found["student_id"] == first["student_id"]
    assert asyncio.run(find_registration(fake_database(fake), "ann@example.org", "k2")) == {"status": "not_found"}


def test_a_lost_commit_acknowledgement_does_not_duplicate() -> None:
    fake = FakeDb()
    fake.drop_after_commit = 1
    out = register(fake, "Ann", "Lee", "ann@example.org", "k1")
    assert out["status"] == "created" and out["replayed"] is True  # the re-run found its own row
    assert fake.commits == 2 and fake.connects == 2
    assert len(fake.students) == 1 and len(fake.enrolls) == 1


def test_student_and_enrolment_are_one_transaction() -> None:
    fake = FakeDb()
    real = fake.execute_sql

    def failing_enrolment(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        if sql == INSERT_ENROLL_FOR_STUDENT_SQL:
            raise psycopg.errors.CheckViolation("refused")
        return real(sql, params)

    fake.execute_sql = failing_enrolment  # type: ignore[method-assign]
    with pytest.raises(psycopg.errors.CheckViolation):
        register(fake, "Ann", "Lee", "ann@example.org", "k1")
    assert fake.students == {} and fake.enrolls == []  # rolled back together


def test_a_database_away_until_the_deadline_is_reported_as_transient() -> None:
    fake = FakeDb()
    fake.refuse_connects = 1000

    async def run() -> None:
        token = set_current_deadline(Deadline(1.5))  # room for two attempts on a loaded machine (0.3 s was not)
        try:
            await register_student(fake_database(fake), "Ann", "Lee", "ann@example.org", "k1")
        finally:
            reset_current_deadline(token)

    with pytest.raises(DeadlineExceeded) as caught:
        asyncio.run(run())
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert fake.connects >= 2


def test_duplicate_check_is_done_by_the_database() -> None:
    # no check-then-insert race: the unique constraints decide, and a conflict returns no row
    assert "ON CONFLICT (email) DO NOTHING RETURNING id" in INSERT_STUDENT_SQL
    assert "ON CONFLICT (student_id) DO NOTHING" in INSERT_ENROLL_FOR_STUDENT_SQL
    schema = " ".join(sql for _, sql in MIGRATIONS)
    assert re.search(r"UNIQUE \(email\)", schema)
    assert re.search(r"student_id\s+BIGINT NOT NULL REFERENCES student \(id\)", schema)
    assert re.search(r"CREATE UNIQUE INDEX IF NOT EXISTS enroll_student_id_key ON enroll \(student_id\)", schema)


@pytest.mark.parametrize("name", ["   ", "A" * 101, "Ann\x00", "Ann\u202eeL", "Ann\ue000", "Ann\x1b[31m"])
def test_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError):
        register(FakeDb(), name, "Lee", "x@example.org", "k")


def test_names_are_cleaned() -> None:
    fake = FakeDb()
    out = register(fake, "  Mary   Ann ", "Lee", "m@example.org", "k")
    assert out["status"] == "created"
    assert fake.students["m@example.org"][1] == "Mary Ann"


def test_enroll_insert_is_idempotent_and_references_the_student() -> None:
    fake = FakeDb()
    db = fake_database(fake)
    sid = asyncio.run(insert_student(db, "Ann", "Lee", "ann@example.org"))["student_id"]
    assert asyncio.run(insert_enroll(db, sid, "Ann", "Lee")) == {"status": "created", "enroll_id": 1}
    assert asyncio.run(insert_enroll(db, sid, "Ann", "Lee")) == {"status": "created", "enroll_id": 1}
    assert len(fake.enrolls) == 1
    with pytest.raises(ValueError):
        asyncio.run(insert_enroll(db, 0, "Ann", "Lee"))


class _MigrationCursor:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class _Tx:
    def __init__(self, conn: MigrationConn) -> None:
        self.conn = conn

    async def __aenter__(self) -> None:
        self.conn.log.append("BEGIN")

    async def __aexit__(self, *exc: object) -> None:
        self.conn.log.append("COMMIT" if exc[0] is None else "ROLLBACK")


class MigrationConn:
    """Records SQL; keeps schema_migrations rows like a database would."""

    def __init__(self, versions: set[int] | None = None) -> None:
        self.log: list[str] = []
        self.versions: set[int] = versions or set()

    def transaction(self) -> _Tx:
        return _Tx(self)

    async def execute(self, sql: str, params: Sequence[Any] | None = None) -> _MigrationCursor:
        self.log.append(sql.strip().split()[0] + (" LOCK" if "advisory" in sql else ""))
        if sql.startswith("SELECT version FROM schema_migrations"):
            return _MigrationCursor([(v,) for v in sorted(self.versions)])
        if sql.startswith("INSERT INTO schema_migrations"):
            assert params is not None
            self.versions.add(int(params[0]))
        return _MigrationCursor([])


def test_migrations_take_the_advisory_lock_first_and_are_idempotent() -> None:
    conn = MigrationConn()
    applied = asyncio.run(migrate(conn))  # type: ignore[arg-type]
    assert applied == [v for v, _ in MIGRATIONS] == [1, 2]
    assert conn.log[0] == "BEGIN"
    assert conn.log[1] == "SELECT LOCK"  # pg_advisory_xact_lock before any DDL
    assert conn.log[-1] == "COMMIT"
    conn.log.clear()
    assert asyncio.run(migrate(conn)) == []  # type: ignore[arg-type]  # second run: nothing to do
    assert conn.log.count("CREATE") == 1  # only the IF NOT EXISTS of schema_migrations


def test_an_existing_database_gets_only_the_new_migration() -> None:
    conn = MigrationConn(versions={1})
    assert asyncio.run(migrate(conn)) == [2]  # type: ignore[arg-type]


def test_migration_sql_is_rerunnable() -> None:
    for _, sql in MIGRATIONS:
        for stmt in filter(None, (s.strip() for s in sql.split(";"))):
            # DDL guarded by IF (NOT) EXISTS; the one DELETE removes only duplicates (a no-op when none)
            assert "IF NOT EXISTS" in stmt or "IF EXISTS" in stmt or stmt.startswith("DELETE FROM enroll e USING"), stmt
