"""enroll.insert: the enrolment row of a student, at most one per student (safe to repeat).

The API registers through ``student.register``, which writes the student and the enrolment in one
transaction; this call remains for callers of the original two-step interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

# Repeating the call returns the existing enrolment instead of adding a second one.
INSERT_ENROLL_SQL: Final = (
    "WITH ins AS (INSERT INTO enroll (student_id, firstname, lastname) VALUES (%s, %s, %s)"
    " ON CONFLICT (student_id) DO NOTHING RETURNING id)"
    " SELECT id FROM ins UNION ALL SELECT id FROM enroll WHERE student_id = %s LIMIT 1"
)


class Executor(Protocol):
    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None: ...


async def insert_enroll(db: Executor, student_id: int, firstname: str, lastname: str) -> dict[str, Any]:
    sid = int(student_id)
    if sid <= 0:
        raise ValueError("student_id must be positive")
    first = " ".join(str(firstname).split())[:100]
    last = " ".join(str(lastname).split())[:100]
    row = await db.fetchone(INSERT_ENROLL_SQL, (sid, first, last, sid))
    if row is None:  # pragma: no cover - the student's enrolment exists after the insert
        raise RuntimeError("insert returned no row")
    return {"status": "created", "enroll_id": int(row[0])}
