from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr

from registration.ui.api_client import ApiContext, http_api_post
from registration.ui.app import UiSettings, create_app
from registration.ui.sessions import SESSION_COOKIE

SETTINGS = UiSettings(
    API_URL="http://api:8000",
    API_USER="api",
    API_PASSWORD=SecretStr("ui-api-password"),
    CSRF_KEY=SecretStr("ui-csrf-key-of-the-tests"),
    SESSION_TTL=1800,
    SESSION_COOKIE_SECURE=False,
    API_TIMEOUT=5.0,
)


class FakeKv:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.ttls: dict[str, int | None] = {}

    async def get(self, name: str) -> Any:
        return self.data.get(name)

    async def set(self, name: str, value: str, ex: int | None = None) -> Any:
        self.data[name] = value
        self.ttls[name] = ex
        return True

    async def delete(self, *names: str) -> Any:
        for n in names:
            self.data.pop(n, None)
        return len(names)


PROOF = "proof-of-the-fake-api"


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.contexts: list[ApiContext] = []
        self.replies: dict[str, tuple[int, Any]] = {
            "/getotp": (200, "sent"),
            "/authen": (200, "ok"),
            "/register": (200, {"student_id": 7}),
        }

    async def __call__(self, path: str, payload: dict[str, Any], ctx: ApiContext) -> tuple[int, dict[str, Any]]:
        self.calls.append((path, payload))
        self.contexts.append(ctx)
        status, results = self.replies[path]
        body: dict[str, Any] = {"results": results}
        if path == "/authen" and (status, results) == (200, "ok"):
            body["proof"] = PROOF  # as the API's answer to a right code
        return status, body


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def make(kv: FakeKv, api: FakeApi, peer: str = "testclient") -> TestClient:
    return TestClient(create_app(SETTINGS, lambda: kv, api), follow_redirects=False, client=(peer, 40000))


def test_pages_show_hostname_and_set_httponly_cookie() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        r = client.get("/")
        assert r.status_code == 200
        assert socket.gethostname() in r.text
        cookie = r.headers["set-cookie"]
        assert f"{SESSION_COOKIE}=" in cookie
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
        assert kv.data == {}  # a page stores nothing: the session is stored once an OTP is requested
        token = csrf_of(r.text)
        assert client.post("/", data={"email": "dan@example.org", "csrf": token}).status_code == 303
        assert list(kv.ttls.values()) == [1800]
        assert client.get("/healthz").json()["hostname"] == socket.gethostname()


def test_full_flow_survives_ui_replacement() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as first:
        token = csrf_of(first.get("/").text)
        r = first.post("/", data={"email": "Dan@Example.org", "csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "authen"
        assert api.calls[-1] == ("/getotp", {"email": "dan@example.org"})
        cookies = dict(first.cookies)
    # a new UI container (new app instance) with the same Redis keeps the user's place
    with make(kv, api) as second:
        second.cookies.update(cookies)
        page = second.get("/authen")
        assert page.status_code == 200 and "dan@example.org" in page.text
        r = second.post("/authen", data={"otp": "123456", "csrf": csrf_of(page.text)})
        assert r.status_code == 303 and r.headers["location"] == "reg"
        page = second.get("/reg")
        assert page.status_code == 200
        r = second.post("/reg", data={"firstname": "Dan", "lastname": "Ho", "csrf": csrf_of(page.text)})
        assert r.status_code == 200
        assert "student ID is 7" in r.text
        assert api.calls[-1] == (
            "/register",
            {"firstname": "Dan", "lastname": "Ho", "email": "dan@example.org", "proof": PROOF},
        )
    assert kv.data == {}  # session removed after registration


def test_reg_page_refused_without_authen() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        assert client.get("/reg").status_code == 403
        token = csrf_of(client.get("/").text)
        assert client.post("/reg", data={"firstname": "a", "lastname": "b", "csrf": token}).status_code == 403
    assert all(path != "/register" for path, _ in api.calls)


def test_csrf_required() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        client.get("/")
        r = client.post("/", data={"email": "x@example.org", "csrf": "forged"})
        assert r.status_code == 400
    assert api.calls == []


def test_refusals_are_shown() -> None:
    kv, api = FakeKv(), FakeApi()
    api.replies["/getotp"] = (403, "unknown_email")
    with make(kv, api) as client:
        token = csrf_of(client.get("/").text)
        r = client.post("/", data={"email": "x@example.org", "csrf": token})
        assert r.status_code == 400
        assert "not on the list" in r.text


def test_fifty_cookieless_pages_store_no_session() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        tokens = set()
        for _ in range(50):
            client.cookies.clear()
            page = client.get("/")
            assert page.status_code == 200 and f"{SESSION_COOKIE}=" in page.headers["set-cookie"]
            tokens.add(csrf_of(page.text))
        for path in ("/authen", "/reg"):  # nor do the later steps' pages, shown without a session
            client.cookies.clear()
            client.get(path)
    assert kv.data == {} and len(tokens) == 50


def test_a_form_token_is_good_only_with_the_id_it_was_signed_for() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        mine = csrf_of(client.get("/").text)
        with make(kv, api) as other:
            theirs = csrf_of(other.get("/").text)
        r = client.post("/", data={"email": "dan@example.org", "csrf": theirs})
        assert r.status_code == 400 and r.headers["x-error-code"] == "invalid_request"
        client.cookies.set(SESSION_COOKIE, "B" * 43)  # an id made up: its token needs the UI's key
        r = client.post("/", data={"email": "dan@example.org", "csrf": mine})
        assert r.status_code == 400
    assert api.calls == [] and kv.data == {}


def test_the_ui_names_the_session_to_the_api_and_registers_with_the_proof() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        client.post("/", data={"email": "dan@example.org", "csrf": csrf_of(client.get("/").text)})
        page = client.get("/authen")
        for _ in range(2):
            client.post("/authen", data={"otp": "123456", "csrf": csrf_of(page.text)})
            api.replies["/authen"] = (401, "invalid_otp")
    sources = [c.source for path, c in zip([p for p, _ in api.calls], api.contexts, strict=True) if path == "/authen"]
    assert sources[0] and len(sources[0]) == 32 and sources[0] not in str(kv.data)  # opaque, not the id


def test_a_session_without_a_proof_cannot_register() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        client.post("/", data={"email": "dan@example.org", "csrf": csrf_of(client.get("/").text)})
        sid = client.cookies[SESSION_COOKIE]
        kv.data[f"session:{sid}"] = '{"email": "dan@example.org", "authen": true}'  # from before proofs
        assert client.get("/reg").status_code == 200
        r = client.post("/reg", data={"firstname": "a", "lastname": "b", "csrf": csrf_of(client.get("/reg").text)})
        assert r.status_code == 403 and r.headers["x-error-code"] == "not_authenticated"
    assert all(path != "/register" for path, _ in api.calls)


# --- session fixation: a new id at every step up in privilege --------------------------------------


def test_the_session_id_changes_at_otp_request_and_at_authentication() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        token = csrf_of(client.get("/").text)
        planted = client.cookies[SESSION_COOKIE]  # e.g. an id an attacker got into the browser
        r = client.post("/", data={"email": "dan@example.org", "csrf": token})
        assert r.status_code == 303
        after_otp = client.cookies[SESSION_COOKIE]
        assert after_otp != planted
        assert f"session:{planted}" not in kv.data  # the old id is dead
        # the planted id no longer reaches the session
        with make(kv, api) as attacker:
            attacker.cookies.set(SESSION_COOKIE, planted)
            assert attacker.get("/authen").status_code == 303  # back to the start: no e-mail in it
        page = client.get("/authen")
        assert page.status_code == 200
        r = client.post("/authen", data={"otp": "123456", "csrf": csrf_of(page.text)})
        assert r.status_code == 303
        after_authen = client.cookies[SESSION_COOKIE]
        assert after_authen not in (planted, after_otp)
        assert f"session:{after_otp}" not in kv.data
        with make(kv, api) as attacker:
            attacker.cookies.set(SESSION_COOKIE, after_otp)
            assert attacker.get("/reg").status_code == 403
        assert client.get("/reg").status_code == 200


def test_the_csrf_token_changes_with_the_session_id() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        token = csrf_of(client.get("/").text)
        client.post("/", data={"email": "dan@example.org", "csrf": token})
        page = client.get("/authen")
        assert csrf_of(page.text) != token
        # the old token is refused
        r = client.post("/authen", data={"otp": "123456", "csrf": token})
        assert r.status_code == 400
    assert [p for p, _ in api.calls] == ["/getotp"]


def test_a_made_up_session_id_is_never_adopted() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        client.cookies.set(SESSION_COOKIE, "A" * 43)
        r = client.get("/")
        assert f"{SESSION_COOKIE}=" in r.headers["set-cookie"]
        assert f"{SESSION_COOKIE}={'A' * 43}" not in r.headers["set-cookie"]
        assert f"session:{'A' * 43}" not in kv.data


# --- what the UI sends to the API -------------------------------------------------------------------


def test_the_ui_validates_the_email_before_calling_the_api() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        token = csrf_of(client.get("/").text)
        for bad in ("nobody", "a\x00b@example.org", "x@localhost", "a" * 300 + "@example.org"):
            r = client.post("/", data={"email": bad, "csrf": token})
            assert r.status_code == 400 and "valid e-mail" in r.text
    assert api.calls == []


def test_the_ui_passes_the_client_address_and_a_key_per_submission() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api, peer="10.20.0.2") as client:  # HAProxy on the lb node
        token = csrf_of(client.get("/").text)
        client.post(
            "/", data={"email": "dan@example.org", "csrf": token}, headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.5"}
        )
        page = client.get("/authen")
        client.post("/authen", data={"otp": "123456", "csrf": csrf_of(page.text)})
    assert [c.client for c in api.contexts] == ["203.0.113.5", "10.20.0.2"]
    assert len({c.key for c in api.contexts}) == 2


def test_rate_limits_and_outages_keep_their_status() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        token = csrf_of(client.get("/").text)
        api.replies["/getotp"] = (429, "rate_limited")
        r = client.post("/", data={"email": "dan@example.org", "csrf": token})
        assert r.status_code == 429 and "Too many requests" in r.text
        api.replies["/getotp"] = (503, "backend_unavailable")
        r = client.post("/", data={"email": "dan@example.org", "csrf": token})
        assert r.status_code == 503 and "unavailable" in r.text


def test_http_api_post_repeats_transport_failures_with_the_same_key() -> None:
    seen: list[tuple[str | None, str | None, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers = request.headers
        seen.append((headers.get("idempotency-key"), headers.get("x-forwarded-for"), headers.get("x-client-session")))
        if len(seen) < 3:
            raise httpx.ConnectError("the api task is being replaced")
        return httpx.Response(200, json={"results": "sent"})

    async def run() -> tuple[int, Any]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://api") as client:
            post = http_api_post(client, budget=5.0)
            ctx = ApiContext(client="203.0.113.5", key="k" * 20, source="s" * 32)
            return await post("/getotp", {"email": "a@example.org"}, ctx)

    assert asyncio.run(run()) == (200, {"results": "sent"})
    assert seen == [("k" * 20, "203.0.113.5", "s" * 32)] * 3


def test_http_api_post_gives_up_with_503_at_its_budget() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    async def run() -> tuple[int, Any]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://api") as client:
            return await http_api_post(client, budget=0.3)("/getotp", {}, ApiContext(client="", key="k" * 20))

    assert asyncio.run(run()) == (503, {"results": "backend_unavailable"})


def test_a_session_store_moving_is_ridden_out_and_a_lasting_outage_is_503_not_500() -> None:
    import asyncio

    import pytest
    from redis.exceptions import ConnectionError as RedisConnectionError

    from registration.ui.sessions import SessionsAway, SessionStore

    class Flaky:
        def __init__(self, failures: int) -> None:
            self.failures = failures
            self.data: dict[str, str] = {}

        async def get(self, name: str) -> str | None:
            if self.failures > 0:
                self.failures -= 1
                raise RedisConnectionError("moving")
            return self.data.get(name)

        async def set(self, name: str, value: str, ex: int | None = None) -> None:
            self.data[name] = value

        async def delete(self, *names: str) -> None:
            for name in names:
                self.data.pop(name, None)

    sid = "a" * 43
    store = SessionStore(Flaky(failures=3), ttl=60, outage_budget=5)
    asyncio.run(store.save(sid, {"csrf": "x"}))
    assert asyncio.run(store.load(sid)) == {"csrf": "x"}  # three refusals, then the answer
    away = SessionStore(Flaky(failures=1000), ttl=60, outage_budget=0.5)
    with pytest.raises(SessionsAway):
        asyncio.run(away.load(sid))


def test_the_pages_have_no_inline_script_or_style_so_the_edge_csp_holds() -> None:
    """HAProxy's Content-Security-Policy allows 'self' only: every style comes from /style.css."""
    client = make(FakeKv(), FakeApi())
    with client:
        page = client.get("/")
        assert page.status_code == 200
        html = page.text
        assert "<style" not in html and "<script" not in html
        assert not re.search(r"<[^>]*\s(style|on\w+)=", html), "an inline style or event handler"
        assert '<link rel="stylesheet" href="style.css">' in html
        sheet = client.get("/style.css")
        assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")
        assert "font-family" in sheet.text
