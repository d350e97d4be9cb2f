"""The registration confirmation mail."""

from __future__ import annotations

from email.message import EmailMessage

from registration.common.mail import build_message
from registration.common.settings import SmtpSettings

SUBJECT = "Registration confirmed"


def confirmation(settings: SmtpSettings, student_id: int, firstname: str, lastname: str, to: str) -> EmailMessage:
    body = (
        f"Dear {firstname} {lastname},\n\n"
        f"your registration is confirmed. Your student ID is {int(student_id)}.\n\n"
        "-- Student registration\n"
    )
    return build_message(settings, to, f"{SUBJECT} (student ID {int(student_id)})", body)
