"""python -m registration.mailsink"""

from __future__ import annotations

from registration.common.logsetup import setup_logging
from registration.common.settings import env_int, env_str
from registration.common.web import serve
from registration.mailsink.app import MailStore, create_app


def main() -> None:
    setup_logging("mailsink")
    store = MailStore(env_int("MAILSINK_MAX_MESSAGES", 1000))
    app = create_app(
        store,
        smtp_host=env_str("SMTP_LISTEN_HOST", "0.0.0.0"),
        smtp_port=env_int("SMTP_LISTEN_PORT", 2525),
        max_bytes=env_int("MAILSINK_MAX_BYTES", 1_048_576),
    )
    serve(app, default_port=8025)


if __name__ == "__main__":
    main()
