"""enroll.insert: one enrolment row referencing the student."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

INSERT_ENROLL_SQL: Final = "INSERT INTO enroll (student_id, firstname, lastname) VALUES (%s, %s, %s) RETURNING id"


class Executor(Protocol):
    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None: ...


async def insert_enroll(db: Executor, student_id: int, firstname: str, lastname: str) -> dict[str, Any]:
    sid = int(student_id)
    if sid <= 0:
        raise ValueError("student_id must be positive")
    first = " ".join(str(firstname).split())[:100]
    last = " ".join(str(lastname).split())[:100]
    row = await db.fetchone(INSERT_ENROLL_SQL, (sid, first, last))
    if row is None:  # pragma: no cover - INSERT ... RETURNING always returns a row
        raise RuntimeError("insert returned no row")
    return {"status": "created", "enroll_id": int(row[0])}
