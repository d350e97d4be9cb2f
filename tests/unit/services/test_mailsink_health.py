from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from fastapi.testclient import TestClient

from registration.common import health
from registration.common.mail import build_message
from registration.common.settings import SmtpSettings
from registration.mailsink.app import MailStore, SinkHandler, create_app

SMTP = SmtpSettings(
    SMTP_HOST="mailsink",
    SMTP_PORT=2525,
    SMTP_STARTTLS=False,
    SMTP_USER=None,
    SMTP_PASSWORD=None,
    MAIL_FROM="reg@example.org",
    SMTP_TIMEOUT=5,
)


def deliver(store: MailStore, to: list[str], subject: str, body: str) -> None:
    msg = build_message(SMTP, ", ".join(to), subject, body)
    envelope = SimpleNamespace(mail_from="reg@example.org", rcpt_tos=to, original_content=msg.as_bytes(), content=None)
    reply = asyncio.run(SinkHandler(store).handle_DATA(cast(Any, None), cast(Any, None), cast(Any, envelope)))
    assert reply.startswith("250")


def test_mailsink_captures_and_filters() -> None:
    store = MailStore(max_messages=10)
    deliver(store, ["a@example.org"], "Your one-time password", "Your one-time password is: 123456\n")
    deliver(store, ["b@example.org", "A@example.org"], "Hello", "hi\n")
    client = TestClient(create_app(store))  # no lifespan: no SMTP port is opened
    r = client.get("/messages", params={"to": "a@example.org"})
    assert r.status_code == 200
    items = r.json()
    assert [m["subject"] for m in items] == ["Your one-time password", "Hello"]
    assert set(items[0]) == {"to", "from", "subject", "body", "received_at"}
    assert "123456" in items[0]["body"]
    assert len(client.get("/messages").json()) == 3
    assert client.get("/healthz").json()["status"] == "ok"


def test_mailsink_is_bounded() -> None:
    store = MailStore(max_messages=3)
    for i in range(5):
        deliver(store, ["x@example.org"], f"m{i}", "body")
    assert [m["subject"] for m in store.messages()] == ["m2", "m3", "m4"]


def test_heartbeat_file(tmp_path: Path) -> None:
    path = str(tmp_path / "healthy")
    assert not health.check_heartbeat(path)
    health.touch_heartbeat(path)
    assert health.check_heartbeat(path, max_age=30)
    old = time.time() - 120
    os.utime(path, (old, old))
    assert not health.check_heartbeat(path, max_age=30)
    assert health.main(["--file", path, "--max-age", "30"]) == 1
    health.clear_heartbeat(path)
    assert not Path(path).exists()


def test_http_check_fails_closed() -> None:
    assert health.check_http("http://127.0.0.1:9/healthz", timeout=0.5) is False
    assert health.check_http("not a url") is False
