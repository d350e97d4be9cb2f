"""python -m registration.student"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from registration.common.db import Database
from registration.common.rpc import Handler
from registration.common.settings import PostgresSettings
from registration.common.worker import Hook, run_worker
from registration.student.logic import insert_student


async def _factory() -> tuple[Mapping[str, Handler], Hook | None]:
    db = Database(PostgresSettings.from_env())
    await db.start()  # waits for PostgreSQL, runs the migrations under the advisory lock

    async def insert(firstname: str, lastname: str, email: str) -> dict[str, Any]:
        return await insert_student(db, firstname, lastname, email)

    return {"insert": insert}, db.close


def main() -> None:
    run_worker("student", _factory)


if __name__ == "__main__":
    main()
