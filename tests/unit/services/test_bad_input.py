"""The bad-input matrix: hostile or broken requests to the API and the UI.

Every case names the status and the error code it must get (the API's ``results``, the UI's
``X-Error-Code`` header); none may be a 500, and none may reach a worker when the request itself
is at fault.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from registration.api.app import ApiSettings, create_app
from registration.common.signing import sign
from registration.otp.rules import OtpPolicy
from registration.ui.app import UiSettings
from registration.ui.app import create_app as create_ui
from tests.unit.services.fakes import FakeBackend
from tests.unit.services.test_ui import FakeApi, FakeKv, csrf_of

API = ("api", "api-secret")
ADMIN = ("admin", "admin-secret")
EMAIL = "eve.student@example.org"
KiB = 1024
PROOF_KEY = b"bad-input-proof-key"


def _proof(email: str = EMAIL, ttl: float = 3600, key: bytes = PROOF_KEY) -> str:
    return sign(key, "register", {"e": email}, expires_at=time.time() + ttl)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    status: int
    code: str
    body: Any = None  # JSON-encoded unless raw is set
    raw: bytes | None = None
    headers: dict[str, str | bytes] = field(default_factory=dict)
    auth: tuple[str, str] | None = API
    method: str = "POST"
    reaches_workers: bool = False


def _email(value: str) -> dict[str, Any]:
    return {"email": value}


def _register(**override: Any) -> dict[str, Any]:
    return {"firstname": "Eve", "lastname": "Student", "email": EMAIL, "proof": _proof()} | override


API_CASES = [
    # credentials and roles
    Case("no credentials", "/api/getotp", 401, "invalid_credentials", _email(EMAIL), auth=None),
    Case("wrong password", "/api/getotp", 401, "invalid_credentials", _email(EMAIL), auth=(API[0], "nope")),
    Case("password of the other role", "/api/getotp", 401, "invalid_credentials", _email(EMAIL), auth=(API[0], ADMIN[1])),
    Case("bearer scheme", "/api/getotp", 401, "invalid_credentials", _email(EMAIL), auth=None,
         headers={"Authorization": "Bearer abc.def"}),
    Case("basic without colon", "/api/getotp", 401, "invalid_credentials", _email(EMAIL), auth=None,
         headers={"Authorization": "Basic " + base64.b64encode(b"apiapi-secret").decode()}),
    Case("basic not base64", "/api/getotp", 401, "invalid_credentials", _email(EMAIL), auth=None,
         headers={"Authorization": "Basic ***"}),
    Case("admin on a student route", "/api/getotp", 403, "forbidden", _email(EMAIL), auth=ADMIN),
    Case("api credential on the eligible list", "/api/create_email_list", 403, "forbidden", {"email_list": [EMAIL]}),
    Case("api credential on the eligible list, no prefix", "/create_email_list", 403, "forbidden",
         {"email_list": [EMAIL]}),
    # JSON shape
    Case("malformed JSON", "/api/getotp", 422, "invalid_request", raw=b'{"email": "a@b.org",'),
    Case("empty body", "/api/getotp", 422, "invalid_request", raw=b""),
    Case("JSON null", "/api/getotp", 422, "invalid_request", raw=b"null"),
    Case("JSON array", "/api/getotp", 422, "invalid_request", [EMAIL]),
    Case("JSON NaN", "/api/getotp", 422, "invalid_request", raw=b'{"email": NaN}'),
    Case("not UTF-8", "/api/getotp", 400, "invalid_request", raw=b'{"email": "\xff\xfe@example.org"}'),
    Case("nested past the parser's limit", "/api/getotp", 400, "invalid_request", raw=b"[" * 40_000),
    Case("text/plain body", "/api/getotp", 422, "invalid_request", raw=b"email=a@b.org",
         headers={"Content-Type": "text/plain"}),
    Case("missing field", "/api/getotp", 422, "invalid_request", {}),
    Case("extra field", "/api/getotp", 422, "invalid_request", _email(EMAIL) | {"admin": True}),
    Case("null field", "/api/getotp", 422, "invalid_request", _email(None)),  # type: ignore[arg-type]
    Case("number for e-mail", "/api/getotp", 422, "invalid_request", {"email": 12}),
    # e-mail addresses
    Case("no at-sign", "/api/getotp", 422, "invalid_request", _email("eve.example.org")),
    Case("NUL in e-mail", "/api/getotp", 422, "invalid_request", _email("eve\x00@example.org")),
    Case("CRLF header injection", "/api/getotp", 422, "invalid_request", _email("eve@example.org\r\nBcc: x@y.org")),
    Case("tab inside", "/api/getotp", 422, "invalid_request", _email("eve\t@example.org")),
    Case("non-ASCII local part", "/api/getotp", 422, "invalid_request", _email("évè@example.org")),
    Case("right-to-left override", "/api/getotp", 422, "invalid_request", _email("eve\u202e@example.org")),
    Case("lone surrogate", "/api/getotp", 422, "invalid_request", raw=b'{"email": "\\ud800@example.org"}'),
    Case("display name", "/api/getotp", 422, "invalid_request", _email("Eve <eve@example.org>")),
    Case("IP literal", "/api/getotp", 422, "invalid_request", _email("eve@[10.0.0.1]")),
    Case("special-use domain", "/api/getotp", 422, "invalid_request", _email("eve@lab.invalid")),
    Case("local part over 64", "/api/getotp", 422, "invalid_request", _email("e" * 65 + "@example.org")),
    Case("address over 254", "/api/getotp", 422, "invalid_request", _email("e@" + "d" * 250 + ".org")),
    Case("eligible list: one bad entry", "/api/create_email_list", 422, "invalid_request",
         {"email_list": [EMAIL, "bad\x00@example.org"]}, auth=ADMIN),
    Case("eligible list: 10001 entries", "/api/create_email_list", 422, "invalid_request",
         {"email_list": [f"s{i}@example.org" for i in range(10_001)]}, auth=ADMIN),
    Case("eligible list: not strings", "/api/create_email_list", 422, "invalid_request",
         {"email_list": [{"email": EMAIL}]}, auth=ADMIN),
    # OTPs
    Case("5-digit OTP", "/api/authen", 422, "invalid_request", {"email": EMAIL, "otp": "12345"}),
    Case("7-digit OTP", "/api/authen", 422, "invalid_request", {"email": EMAIL, "otp": "1234567"}),
    Case("Arabic-Indic digits", "/api/authen", 422, "invalid_request", {"email": EMAIL, "otp": "١٢٣٤٥٦"}),
    Case("fullwidth digits", "/api/authen", 422, "invalid_request", {"email": EMAIL, "otp": "１２３４５６"}),
    Case("OTP as a number", "/api/authen", 422, "invalid_request", {"email": EMAIL, "otp": 123456}),
    Case("NUL in OTP", "/api/authen", 422, "invalid_request", {"email": EMAIL, "otp": "12345\x00"}),
    # names
    Case("empty first name", "/api/register", 422, "invalid_request", _register(firstname="")),
    Case("blank first name", "/api/register", 422, "invalid_request", _register(firstname=" \t ")),
    Case("101-character name", "/api/register", 422, "invalid_request", _register(lastname="L" * 101)),
    Case("NUL in name", "/api/register", 422, "invalid_request", _register(firstname="Eve\x00")),
    Case("escape sequence in name", "/api/register", 422, "invalid_request", _register(firstname="\x1b[31mEve")),
    Case("bidi override in name", "/api/register", 422, "invalid_request", _register(lastname="tneduts\u202e")),
    Case("missing last name", "/api/register", 422, "invalid_request", {"firstname": "Eve", "email": EMAIL}),
    Case("student id smuggled in", "/api/register", 422, "invalid_request", _register(student_id=1)),
    # the proof of /authen that /register asks for
    Case("register without a proof", "/api/register", 422, "invalid_request",
         {"firstname": "Eve", "lastname": "Student", "email": EMAIL}),
    Case("proof not a string", "/api/register", 422, "invalid_request", _register(proof=12)),
    Case("proof over 1024 characters", "/api/register", 422, "invalid_request", _register(proof="p" * 1025)),
    Case("forged proof", "/api/register", 403, "invalid_proof", _register(proof="e30.forged")),
    Case("proof signed with another key", "/api/register", 403, "invalid_proof",
         _register(proof=_proof(key=b"someone-elses-key"))),
    Case("expired proof", "/api/register", 403, "invalid_proof", _register(proof=_proof(ttl=-1))),
    Case("another address's proof", "/api/register", 403, "invalid_proof",
         _register(proof=_proof("mallory@example.org"))),
    Case("non-ASCII proof", "/api/register", 403, "invalid_proof", _register(proof="é.é")),
    # headers and sizes
    Case("body over 64 KiB", "/api/getotp", 413, "body_too_large", _email("e" * (65 * KiB) + "@example.org")),
    Case("short idempotency key", "/api/getotp", 422, "invalid_idempotency_key", _email(EMAIL),
         headers={"Idempotency-Key": "abc"}),
    Case("latin-1 idempotency key", "/api/register", 422, "invalid_idempotency_key", _register(),
         headers={"Idempotency-Key": "é".encode("latin-1") * 20}),
    Case("unknown route", "/api/admin", 404, "not_found", {}),
    Case("GET on a POST route", "/api/getotp", 405, "method_not_allowed", method="GET"),
    # well-formed, refused by the rules (these do reach the workers)
    # not on the eligible list: the answer an eligible address gets (no oracle), and no mail
    Case("not on the eligible list", "/api/getotp", 200, "sent", _email("mallory@example.org"),
         reaches_workers=True),
    Case("OTP for an address not on the list", "/api/authen", 401, "expired",
         {"email": "mallory@example.org", "otp": "123456"}, reaches_workers=True),
    Case("OTP never requested", "/api/authen", 401, "expired", {"email": EMAIL, "otp": "123456"}, reaches_workers=True),
    Case("malformed session header", "/api/authen", 401, "expired", {"email": EMAIL, "otp": "123456"},
         headers={"X-Client-Session": "short; evil"}, reaches_workers=True),
    Case("register without an OTP", "/api/register", 403, "not_authenticated", _register(), reaches_workers=True),
]  # fmt: skip


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(OtpPolicy())


@pytest.fixture
def api(backend: FakeBackend) -> Iterator[TestClient]:
    settings = ApiSettings(
        API_USER=API[0],
        API_PASSWORD=SecretStr(API[1]),
        ADMIN_USER=ADMIN[0],
        ADMIN_PASSWORD=SecretStr(ADMIN[1]),
        REQUEST_DEADLINE=2.0,
        RPC_TIMEOUT=1.0,
        PROOF_KEY=SecretStr(PROOF_KEY.decode()),
    )
    app = create_app(settings, rpc=backend)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/api/create_email_list", json={"email_list": [EMAIL]}, auth=ADMIN).status_code == 200
        backend.calls.clear()
        yield client


def test_the_matrix_is_large_enough() -> None:
    assert len(API_CASES) + len(UI_CASES) >= 30
    assert len({c.name for c in API_CASES}) == len(API_CASES)


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_api_bad_input(api: TestClient, backend: FakeBackend, case: Case) -> None:
    headers: dict[str, str | bytes] = dict(case.headers)
    if case.auth is not None:
        headers["Authorization"] = basic(*case.auth)
    if case.raw is not None:
        content = case.raw
        headers.setdefault("Content-Type", "application/json")
    elif case.body is not None:
        content = json.dumps(case.body).encode()
        headers.setdefault("Content-Type", "application/json")
    else:
        content = b""
    response = api.request(case.method, case.path, content=content, headers=headers)
    assert response.status_code == case.status, response.text[:300]
    assert response.json()["results"] == case.code
    # the request is never echoed back (it may hold an OTP or a password attempt)
    if case.raw is None and isinstance(case.body, dict):
        for value in case.body.values():
            if isinstance(value, str) and len(value) > 3:
                assert value not in response.text
    if not case.reaches_workers:
        assert backend.calls == []
    assert backend.otp_mails == []  # none of these mails anything (the unknown address included)


def test_checks_past_the_rate_limit_are_429_with_retry_after(backend: FakeBackend) -> None:
    backend.otp.policy = OtpPolicy(rate_per_client=2)
    settings = ApiSettings(API_USER=API[0], API_PASSWORD=SecretStr(API[1]), PROOF_KEY=SecretStr(PROOF_KEY.decode()))
    with TestClient(create_app(settings, rpc=backend), client=("203.0.113.7", 40000)) as client:
        replies = [client.post("/api/authen", json={"email": EMAIL, "otp": "123456"}, auth=API) for _ in range(3)]
    assert [(r.status_code, r.json()["results"]) for r in replies] == [(401, "expired")] * 2 + [(429, "rate_limited")]
    assert int(replies[-1].headers["retry-after"]) >= 1


def test_fifty_concurrent_wrong_otps_through_the_api(backend: FakeBackend) -> None:
    settings = ApiSettings(
        API_USER=API[0],
        API_PASSWORD=SecretStr(API[1]),
        REQUEST_DEADLINE=5.0,
        RPC_TIMEOUT=2.0,
        PROOF_KEY=SecretStr(PROOF_KEY.decode()),
    )
    app = create_app(settings, rpc=backend)
    app.state.rpc = backend  # httpx's ASGI transport runs no lifespan

    async def run() -> tuple[list[int], list[str], int]:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api", auth=API) as client:
            await backend.otp.create_email_list([EMAIL])
            assert (await client.post("/api/getotp", json={"email": EMAIL})).status_code == 200
            code = backend.last_otp_for(EMAIL)
            wrong = f"{(int(code) + 1) % 1_000_000:06d}"
            replies = await asyncio.gather(
                *(client.post("/api/authen", json={"email": EMAIL, "otp": wrong}) for _ in range(50))
            )
            right = await client.post("/api/authen", json={"email": EMAIL, "otp": code})
            return [r.status_code for r in replies], [r.json()["results"] for r in replies], right.status_code

    statuses, codes, right = asyncio.run(run())
    assert sorted(zip(statuses, codes, strict=True)) == sorted([(401, "invalid_otp")] * 5 + [(429, "locked")] * 45)
    assert right == 429  # after the lock, even the right code fails


# --- the UI ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UiCase:
    name: str
    path: str
    form: dict[str, str]
    status: int
    code: str
    step: str = "start"  # start: fresh session; otp: an OTP requested; authen: verified
    csrf: str | None = None  # None: the page's own token
    api_reply: tuple[int, Any] | None = None


UI_CASES = [
    UiCase("no CSRF token", "/", {"email": EMAIL}, 400, "invalid_request", csrf=""),
    UiCase("forged CSRF token", "/", {"email": EMAIL}, 400, "invalid_request", csrf="forged-token"),
    UiCase("missing e-mail", "/", {}, 400, "invalid_email"),
    UiCase("NUL in e-mail", "/", {"email": "eve\x00@example.org"}, 400, "invalid_email"),
    UiCase("CRLF in e-mail", "/", {"email": "eve@example.org\r\nBcc: x@y.org"}, 400, "invalid_email"),
    UiCase("2000-character e-mail", "/", {"email": "e" * 2000 + "@example.org"}, 400, "invalid_email"),
    UiCase("non-ASCII local part", "/", {"email": "ëve@example.org"}, 400, "invalid_email"),
    UiCase("rate limited by the API", "/", {"email": EMAIL}, 429, "rate_limited", api_reply=(429, "rate_limited")),
    UiCase("API unavailable", "/", {"email": EMAIL}, 503, "backend_unavailable",
           api_reply=(503, "backend_unavailable")),
    UiCase("API answers nonsense", "/", {"email": EMAIL}, 400, "backend_error", api_reply=(200, {"weird": 1})),
    UiCase("5-digit OTP", "/authen", {"otp": "12345"}, 400, "invalid_otp", step="otp"),
    UiCase("letters for an OTP", "/authen", {"otp": "abcdef"}, 400, "invalid_otp", step="otp"),
    UiCase("Arabic-Indic OTP", "/authen", {"otp": "١٢٣٤٥٦"}, 400, "invalid_otp", step="otp"),
    UiCase("OTP locked", "/authen", {"otp": "123456"}, 429, "locked", step="otp", api_reply=(429, "locked")),
    UiCase("OTP checks rate limited", "/authen", {"otp": "123456"}, 429, "rate_limited", step="otp",
           api_reply=(429, "rate_limited")),
    UiCase("CSRF token of another session", "/authen", {"otp": "123456"}, 400, "invalid_request", step="otp",
           csrf="0" * 64),
    UiCase("register before verifying", "/reg", {"firstname": "Eve", "lastname": "S"}, 403, "not_authenticated",
           step="otp"),
    UiCase("NUL in name", "/reg", {"firstname": "Eve\x00", "lastname": "S"}, 400, "invalid_request", step="authen"),
    UiCase("bidi override in name", "/reg", {"firstname": "Eve", "lastname": "S\u202e"}, 400, "invalid_request",
           step="authen"),
    UiCase("101-character name", "/reg", {"firstname": "E" * 101, "lastname": "S"}, 400, "invalid_request",
           step="authen"),
    UiCase("form over 64 KiB", "/", {"email": "e" * (70 * KiB)}, 413, "body_too_large"),
]  # fmt: skip


def _ui_client(api: FakeApi) -> TestClient:
    settings = UiSettings(
        API_PASSWORD=SecretStr("x"), CSRF_KEY=SecretStr("bad-input-csrf-key"), MAX_BODY_BYTES=64 * KiB
    )
    kv = FakeKv()
    return TestClient(create_ui(settings, lambda: kv, api), follow_redirects=False, raise_server_exceptions=False)


@pytest.mark.parametrize("case", UI_CASES, ids=[c.name for c in UI_CASES])
def test_ui_bad_input(case: UiCase) -> None:
    api = FakeApi()
    with _ui_client(api) as ui:
        page = ui.get("/")
        if case.step in ("otp", "authen"):
            assert ui.post("/", data={"email": EMAIL, "csrf": csrf_of(page.text)}).status_code == 303
            page = ui.get("/authen")
        if case.step == "authen":
            assert ui.post("/authen", data={"otp": "123456", "csrf": csrf_of(page.text)}).status_code == 303
            page = ui.get("/reg")
        token = csrf_of(page.text) if case.csrf is None and "csrf" in page.text else (case.csrf or "")
        if case.api_reply is not None:
            api.replies = dict.fromkeys(api.replies, case.api_reply)
        calls_before = len(api.calls)
        response = ui.post(case.path, data={**case.form, "csrf": token})
        assert response.status_code == case.status, response.text[:300]
        assert response.headers.get("x-error-code") == case.code
        if case.api_reply is None:
            assert len(api.calls) == calls_before  # refused by the UI itself
