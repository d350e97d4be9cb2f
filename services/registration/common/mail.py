"""Sending mail over SMTP (plain, or STARTTLS + login for a real relay)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from registration.common.settings import SmtpSettings


def build_message(settings: SmtpSettings, to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or None)
    msg.set_content(body)
    return msg


def send_message_sync(settings: SmtpSettings, msg: EmailMessage) -> None:
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
        smtp.ehlo()
        if settings.starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if settings.user and settings.password is not None:
            smtp.login(settings.user, settings.password.get_secret_value())
        smtp.send_message(msg)


async def send_message(settings: SmtpSettings, msg: EmailMessage) -> None:
    await asyncio.to_thread(send_message_sync, settings, msg)
