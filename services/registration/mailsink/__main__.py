"""python -m registration.mailsink"""

from __future__ import annotations

from pydantic import Field

from registration.common.logsetup import setup_logging
from registration.common.settings import EnvSettings, Int
from registration.common.web import serve
from registration.mailsink.app import MailStore, create_app


class MailsinkSettings(EnvSettings):
    max_messages: Int = Field(1000, validation_alias="MAILSINK_MAX_MESSAGES")
    smtp_host: str = Field("0.0.0.0", validation_alias="SMTP_LISTEN_HOST")
    smtp_port: Int = Field(2525, validation_alias="SMTP_LISTEN_PORT")
    max_bytes: Int = Field(1_048_576, validation_alias="MAILSINK_MAX_BYTES")


def main() -> None:
    setup_logging("mailsink")
    settings = MailsinkSettings.from_env()
    store = MailStore(settings.max_messages)
    app = create_app(store, smtp_host=settings.smtp_host, smtp_port=settings.smtp_port, max_bytes=settings.max_bytes)
    serve(app, default_port=8025)


if __name__ == "__main__":
    main()
