"""student.register: the student row and its enrolment in one transaction, safe to repeat.

* The duplicate check is the database's UNIQUE (email) constraint, not a prior SELECT, so two
  concurrent registrations of one e-mail cannot both succeed.
* The request's idempotency key is stored on the row: the same request run again (a retry after a
  lost reply, a reconnect after a COMMIT whose acknowledgement was lost, a client replaying its
  request) finds its own row and answers the same success without a second row; another request
  for a registered e-mail is refused (``already_registered``).
* The enrolment is inserted in the same transaction (``UNIQUE (student_id)``, ``ON CONFLICT DO
  NOTHING``), so a student never exists without it and never has two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from registration.common.text import clean_name

T = TypeVar("T")

INSERT_STUDENT_SQL: Final = (
    "INSERT INTO student (firstname, lastname, email, request_key) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (email) DO NOTHING RETURNING id"
)
SELECT_STUDENT_SQL: Final = "SELECT id, request_key FROM student WHERE email = %s"
INSERT_ENROLL_FOR_STUDENT_SQL: Final = (
    "INSERT INTO enroll (student_id, firstname, lastname) VALUES (%s, %s, %s) ON CONFLICT (student_id) DO NOTHING"
)

KEY_MAX_LEN: Final = 128


class Executor(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any: ...


class Transactions(Protocol):
    """Runs an idempotent body in one transaction (``registration.common.db.Database``)."""

    async def run(self, body: Callable[[Executor], Awaitable[T]], *, what: str = ...) -> T: ...


def clean_key(value: str) -> str:
    key = str(value)
    if not 1 <= len(key) <= KEY_MAX_LEN:
        raise ValueError("idempotency key must be 1..128 characters")
    return key


async def _fetchone(tx: Executor, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    cur = await tx.execute(sql, params)
    row: tuple[Any, ...] | None = await cur.fetchone()
    return row


async def register_student(db: Transactions, firstname: str, lastname: str, email: str, key: str) -> dict[str, Any]:
    first, last = clean_name(firstname), clean_name(lastname)
    address, request_key = email.strip().lower(), clean_key(key)

    async def body(tx: Executor) -> dict[str, Any]:
        row = await _fetchone(tx, INSERT_STUDENT_SQL, (first, last, address, request_key))
        replayed = row is None
        if row is None:
            existing = await _fetchone(tx, SELECT_STUDENT_SQL, (address,))
            if existing is None or existing[1] != request_key:
                return {"status": "already_registered"}
            row = existing
        student_id = int(row[0])
        await tx.execute(INSERT_ENROLL_FOR_STUDENT_SQL, (student_id, first, last))
        return {"status": "created", "student_id": student_id, "replayed": replayed}

    return await db.run(body, what="register")


# The original one-row interface, kept so that an API of the previous version keeps working
# during a rolling update; the current API calls student.register.
INSERT_STUDENT_ONLY_SQL: Final = (
    "INSERT INTO student (firstname, lastname, email) VALUES (%s, %s, %s) ON CONFLICT (email) DO NOTHING RETURNING id"
)


class RowExecutor(Protocol):
    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None: ...


async def insert_student(db: RowExecutor, firstname: str, lastname: str, email: str) -> dict[str, Any]:
    row = await db.fetchone(
        INSERT_STUDENT_ONLY_SQL, (clean_name(firstname), clean_name(lastname), email.strip().lower())
    )
    if row is None:
        return {"status": "already_registered"}
    return {"status": "created", "student_id": int(row[0])}


async def find_registration(db: Transactions, email: str, key: str) -> dict[str, Any]:
    """The answer a register with this key already got (``created``), else ``not_found``."""
    address, request_key = email.strip().lower(), clean_key(key)

    async def body(tx: Executor) -> dict[str, Any]:
        row = await _fetchone(tx, SELECT_STUDENT_SQL, (address,))
        if row is None or row[1] != request_key:
            return {"status": "not_found"}
        return {"status": "created", "student_id": int(row[0]), "replayed": True}

    return await db.run(body, what="find")
