"""student.insert: one row per e-mail (UNIQUE constraint; a second registration is refused)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

# The duplicate check is the database's UNIQUE (email) constraint, not a prior SELECT, so two
# concurrent registrations of one e-mail cannot both succeed.
INSERT_STUDENT_SQL: Final = (
    "INSERT INTO student (firstname, lastname, email) VALUES (%s, %s, %s) ON CONFLICT (email) DO NOTHING RETURNING id"
)

NAME_MAX_LEN: Final = 100


class Executor(Protocol):
    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None: ...


def clean_name(value: str) -> str:
    name = " ".join(str(value).split())
    if not name or len(name) > NAME_MAX_LEN:
        raise ValueError("name must be 1..100 characters")
    return name


async def insert_student(db: Executor, firstname: str, lastname: str, email: str) -> dict[str, Any]:
    row = await db.fetchone(INSERT_STUDENT_SQL, (clean_name(firstname), clean_name(lastname), email.strip().lower()))
    if row is None:
        return {"status": "already_registered"}
    return {"status": "created", "student_id": int(row[0])}
