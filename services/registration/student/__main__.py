"""python -m registration.student"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from registration.common.db import Database
from registration.common.deadline import TransientError
from registration.common.rpc import Handler
from registration.common.settings import PostgresSettings
from registration.common.worker import Hook, run_worker
from registration.student.logic import find_registration, insert_student, register_student


async def _factory() -> tuple[Mapping[str, Handler], Hook | None]:
    db = Database(PostgresSettings.from_env())
    await db.start()  # waits for PostgreSQL, runs the migrations under the advisory lock

    async def register(firstname: str, lastname: str, email: str, key: str) -> dict[str, Any]:
        return await register_student(db, firstname, lastname, email, key)

    async def find(email: str, key: str) -> dict[str, Any]:
        return await find_registration(db, email, key)

    async def insert(firstname: str, lastname: str, email: str) -> dict[str, Any]:
        return await insert_student(db, firstname, lastname, email)

    return {"register": register, "find": find, "insert": insert}, db.close


def main() -> None:
    # A database still away when the request's deadline is near is reported as transient.
    run_worker("student", _factory, transient=(TransientError, psycopg.OperationalError, OSError, TimeoutError))


if __name__ == "__main__":
    main()
