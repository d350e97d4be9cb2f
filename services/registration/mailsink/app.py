"""SMTP (aiosmtpd, port 2525) + HTTP (FastAPI, port 8025) in one event loop.

``GET /messages?to=addr`` returns ``[{to, from, subject, body, received_at}, ...]`` (oldest
first), one entry per recipient. At most ``MAILSINK_MAX_MESSAGES`` entries are kept (oldest
dropped) and an SMTP message may be at most ``MAILSINK_MAX_BYTES`` bytes.
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Query

log = logging.getLogger(__name__)


def _body_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        return str(part.get_content())
    except (LookupError, KeyError, AttributeError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


class MailStore:
    def __init__(self, max_messages: int = 1000) -> None:
        self._items: deque[dict[str, str]] = deque(maxlen=max_messages)
        self._lock = threading.Lock()

    def add(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> None:
        msg = BytesParser(policy=email.policy.default).parsebytes(content)
        assert isinstance(msg, EmailMessage)
        subject = str(msg.get("Subject", ""))
        body = _body_text(msg)
        now = datetime.now(UTC).isoformat()
        with self._lock:
            for rcpt in rcpt_tos:
                self._items.append(
                    {"to": rcpt, "from": mail_from, "subject": subject, "body": body, "received_at": now}
                )

    def messages(self, to: str | None = None) -> list[dict[str, str]]:
        with self._lock:
            items = list(self._items)
        if to:
            wanted = to.strip().lower()
            items = [m for m in items if m["to"].lower() == wanted]
        return items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class SinkHandler:
    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "replace")
        self.store.add(str(envelope.mail_from or ""), [str(r) for r in envelope.rcpt_tos], content)
        log.info("captured message for %s", ", ".join(envelope.rcpt_tos))
        return "250 Message accepted"


def create_app(
    store: MailStore, smtp_host: str = "0.0.0.0", smtp_port: int = 2525, max_bytes: int = 1_048_576
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        handler = SinkHandler(store)
        server = await loop.create_server(
            lambda: SMTP(handler, data_size_limit=max_bytes, hostname="mailsink"),
            host=smtp_host,
            port=smtp_port,
        )
        log.info("SMTP listening on %s:%s", smtp_host, smtp_port)
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()

    app = FastAPI(title="Lab mail sink", lifespan=lifespan)
    hostname = socket.gethostname()

    @app.get("/messages")
    async def messages(to: str | None = Query(default=None, max_length=254)) -> list[dict[str, Any]]:
        return list(store.messages(to))

    @app.delete("/messages")
    async def clear() -> dict[str, str]:
        store.clear()
        return {"status": "cleared"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "hostname": hostname}

    return app
