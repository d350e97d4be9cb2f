"""python -m registration.enroll"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from registration.common.db import Database
from registration.common.deadline import TransientError
from registration.common.rpc import Handler
from registration.common.settings import PostgresSettings
from registration.common.worker import Hook, run_worker
from registration.enroll.logic import insert_enroll


async def _factory() -> tuple[Mapping[str, Handler], Hook | None]:
    db = Database(PostgresSettings.from_env())
    await db.start()

    async def insert(student_id: int, firstname: str, lastname: str) -> dict[str, Any]:
        return await insert_enroll(db, student_id, firstname, lastname)

    return {"insert": insert}, db.close


def main() -> None:
    run_worker("enroll", _factory, transient=(TransientError, psycopg.OperationalError, OSError, TimeoutError))


if __name__ == "__main__":
    main()
