"""python -m registration.email"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from registration.common.mail import send_message
from registration.common.rpc import Handler
from registration.common.settings import SmtpSettings
from registration.common.worker import Hook, run_worker
from registration.email.compose import confirmation

log = logging.getLogger("registration.email")


async def _factory() -> tuple[Mapping[str, Handler], Hook | None]:
    settings = SmtpSettings.from_env()

    async def send(student_id: int, firstname: str, lastname: str, email: str) -> str:
        await send_message(settings, confirmation(settings, student_id, firstname, lastname, email))
        log.info("confirmation for student %s sent to %s", student_id, email)
        return "sent"

    return {"send": send}, None


def main() -> None:
    run_worker("email", _factory)


if __name__ == "__main__":
    main()
