"""The request guard at the ASGI level: what it reads of a body, and when; the client address."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from pydantic import SecretStr

from registration.api.app import ApiSettings, create_app
from registration.common.web import Guard, client_address
from tests.unit.services.fakes import FakeBackend

MiB = 1024 * 1024
API_AUTH = "Basic " + base64.b64encode(b"api:pw-api").decode()
ADMIN_AUTH = "Basic " + base64.b64encode(b"admin:pw-admin").decode()


class Upload:
    """A client sending ``total`` bytes in 1 MiB chunks; counts what the server asked for."""

    def __init__(self, total: int, chunk: int = MiB) -> None:
        self.left = total
        self.chunk = chunk
        self.received = 0
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        size = min(self.chunk, self.left)
        self.left -= size
        self.received += size
        return {"type": "http.request", "body": b"x" * size, "more_body": self.left > 0}


def request(app: Any, path: str, upload: Upload, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("10.20.0.2", 40000),
        "server": ("api", 8000),
    }
    asyncio.run(app(scope, upload, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), json.loads(body)


@pytest.fixture
def api() -> Any:
    settings = ApiSettings(
        API_USER="api",
        API_PASSWORD=SecretStr("pw-api"),
        ADMIN_USER="admin",
        ADMIN_PASSWORD=SecretStr("pw-admin"),
        MAX_BODY_BYTES=64 * 1024,
        MAX_ADMIN_BODY_BYTES=4 * MiB,
        PROOF_KEY=SecretStr("pw-proof"),
    )
    return create_app(settings, rpc=FakeBackend())


def test_an_unauthenticated_50_mb_body_is_refused_without_reading_it(api: Any) -> None:
    upload = Upload(50 * MiB)
    status, body = request(api, "/api/getotp", upload, {"content-length": str(50 * MiB)})
    assert (status, body) == (401, {"results": "invalid_credentials"})
    assert upload.calls == 0 and upload.received == 0


def test_a_50_mb_body_without_content_length_is_refused_unread_too(api: Any) -> None:
    upload = Upload(50 * MiB)
    status, _ = request(api, "/api/register", upload, {"authorization": "Basic bm9ib2R5Om5vcGU="})
    assert status == 401 and upload.calls == 0


def test_an_authenticated_oversized_body_is_refused_by_its_length_unread(api: Any) -> None:
    upload = Upload(50 * MiB)
    status, body = request(api, "/api/getotp", upload, {"authorization": API_AUTH, "content-length": str(50 * MiB)})
    assert (status, body) == (413, {"results": "body_too_large"})
    assert upload.calls == 0


def test_a_chunked_oversized_body_is_cut_at_the_limit(api: Any) -> None:
    upload = Upload(50 * MiB, chunk=16 * 1024)
    status, body = request(api, "/api/getotp", upload, {"authorization": API_AUTH})
    assert (status, body) == (413, {"results": "body_too_large"})
    assert upload.received <= 64 * 1024 + 16 * 1024  # never more than the limit plus one chunk


def test_the_admin_gets_a_larger_limit_and_only_the_admin(api: Any) -> None:
    two_mib = str(2 * MiB)
    status, _ = request(
        api, "/api/create_email_list", Upload(0), {"authorization": API_AUTH, "content-length": two_mib}
    )
    assert status == 403  # the api credential is refused before the size matters
    upload = Upload(5 * MiB)
    status, _ = request(api, "/api/create_email_list", upload, {"authorization": ADMIN_AUTH})
    assert status == 413 and upload.received <= 5 * MiB


def test_a_bad_content_length_is_400(api: Any) -> None:
    status, body = request(api, "/api/getotp", Upload(0), {"authorization": API_AUTH, "content-length": "12abc"})
    assert (status, body) == (400, {"results": "invalid_request"})


@pytest.mark.parametrize(
    "header",
    ["Basic", "Basic !!!", "Bearer abc", "Basic " + base64.b64encode(b"no-colon").decode(), "basic", "Basic \x00"],
)
def test_malformed_authorization_headers_are_401(api: Any, header: str) -> None:
    status, body = request(api, "/api/getotp", Upload(0), {"authorization": header})
    assert (status, body) == (401, {"results": "invalid_credentials"})


def test_guard_passes_websocket_and_lifespan_scopes_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def send(message: Any) -> None:
        pass

    asyncio.run(Guard(app)({"type": "lifespan"}, Upload(0), send))
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("10.20.0.2", [], "*", "10.20.0.2"),
        ("10.20.0.2", ["203.0.113.7"], "*", "203.0.113.7"),
        # the client's own entries are to the left of HAProxy's; only the right-most counts
        ("10.20.0.2", ["1.2.3.4, 203.0.113.7"], "*", "203.0.113.7"),
        ("10.20.0.2", ["1.2.3.4", "203.0.113.7"], "*", "203.0.113.7"),  # two header lines
        # from an untrusted peer the header is ignored
        ("192.0.2.9", ["203.0.113.7"], "10.20.0.2", "192.0.2.9"),
        # through trusted hops: the first untrusted address from the right
        ("10.20.0.2", ["203.0.113.7, 10.0.1.5"], "10.20.0.2, 10.0.1.0/24", "203.0.113.7"),
        ("10.20.0.2", ["garbage"], "*", "10.20.0.2"),
        ("10.20.0.2", ["[2001:db8::1]:443"], "*", "2001:db8::1"),
        ("10.20.0.2", ["203.0.113.7:5555"], "*", "203.0.113.7"),
        (None, ["203.0.113.7"], "*", ""),
        ("testclient", ["203.0.113.7"], "*", ""),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], trusted: str, expected: str) -> None:
    assert client_address(peer, forwarded, trusted) == expected
