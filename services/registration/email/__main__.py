"""python -m registration.email"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Mapping

from registration.common.deadline import TransientError
from registration.common.emails import mask_email
from registration.common.mail import send_message
from registration.common.once import Once
from registration.common.rpc import Handler
from registration.common.settings import SmtpSettings
from registration.common.worker import Hook, run_worker
from registration.email.compose import confirmation

log = logging.getLogger("registration.email")


async def _factory() -> tuple[Mapping[str, Handler], Hook | None]:
    settings = SmtpSettings.from_env()
    once: Once[str] = Once()

    async def send(student_id: int, firstname: str, lastname: str, email: str, key: str | None = None) -> str:
        async def deliver() -> str:
            await send_message(settings, confirmation(settings, student_id, firstname, lastname, email))
            log.info("confirmation for student %s sent to %s", student_id, mask_email(email))
            return "sent"

        # One confirmation per student and address (or per key) however often the request is repeated.
        return await once.run(key or f"student-{int(student_id)}-{email}", deliver)

    return {"send": send}, None


def main() -> None:
    # A relay that refuses for now (4xx, connection lost) is worth another try by the caller.
    run_worker("email", _factory, transient=(TransientError, OSError, TimeoutError, smtplib.SMTPException))


if __name__ == "__main__":
    main()
