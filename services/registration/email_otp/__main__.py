"""python -m registration.email_otp"""

from __future__ import annotations

import hashlib
import logging
import smtplib
from collections.abc import Mapping

from pydantic import Field

from registration.common.deadline import TransientError
from registration.common.emails import mask_email
from registration.common.mail import send_message
from registration.common.metrics import OTP_MAILS_SENT
from registration.common.once import Once
from registration.common.rpc import Handler
from registration.common.settings import EnvSettings, Int, SmtpSettings
from registration.common.worker import Hook, run_worker
from registration.email_otp.compose import otp_mail

log = logging.getLogger("registration.email_otp")


class OtpMailSettings(EnvSettings):
    otp_ttl: Int = Field(300, validation_alias="OTP_TTL")  # the mail tells how long the code is valid


async def _factory() -> tuple[Mapping[str, Handler], Hook | None]:
    settings = SmtpSettings.from_env()
    ttl = OtpMailSettings.from_env().otp_ttl

    once: Once[str] = Once(ttl=float(ttl))

    async def send(otp: str, email: str, key: str | None = None) -> str:
        async def deliver() -> str:
            await send_message(settings, otp_mail(settings, str(otp), email, ttl))
            OTP_MAILS_SENT.inc()
            log.info("OTP mail sent to %s", mask_email(email))  # never the code itself
            return "sent"

        # The same code to the same address goes out once, however often the request is delivered.
        # Keyed by the code, not by the request key: a repeated request may carry a fresh code
        # (see registration.otp.rules), which must reach the student. The key never holds the code.
        del key
        return await once.run(hashlib.sha256(f"{email}\0{otp}".encode()).hexdigest(), deliver)

    return {"send": send}, None


def main() -> None:
    run_worker("email_otp", _factory, transient=(TransientError, OSError, TimeoutError, smtplib.SMTPException))


if __name__ == "__main__":
    main()
