"""python -m registration.email_otp"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pydantic import Field

from registration.common.mail import send_message
from registration.common.metrics import OTP_MAILS_SENT
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

    async def send(otp: str, email: str) -> str:
        await send_message(settings, otp_mail(settings, str(otp), email, ttl))
        OTP_MAILS_SENT.inc()
        log.info("OTP mail sent to %s", email)  # never the code itself
        return "sent"

    return {"send": send}, None


def main() -> None:
    run_worker("email_otp", _factory)


if __name__ == "__main__":
    main()
