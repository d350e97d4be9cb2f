"""The OTP mail."""

from __future__ import annotations

from email.message import EmailMessage

from registration.common.mail import build_message
from registration.common.settings import SmtpSettings

SUBJECT = "Your one-time password"


def otp_mail(settings: SmtpSettings, otp: str, to: str, ttl_seconds: int) -> EmailMessage:
    minutes = max(1, ttl_seconds // 60)
    body = (
        f"Your one-time password is: {otp}\n\n"
        f"It is valid for {minutes} minute(s) and can be used once.\n"
        "If you did not ask for it, ignore this mail.\n\n"
        "-- Student registration\n"
    )
    return build_message(settings, to, SUBJECT, body)
