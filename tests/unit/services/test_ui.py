from __future__ import annotations

import re
import socket
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr

from registration.ui.app import UiSettings, create_app
from registration.ui.sessions import SESSION_COOKIE

SETTINGS = UiSettings(
    API_URL="http://api:8000",
    API_USER="api",
    API_PASSWORD=SecretStr("ui-api-password"),
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


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.replies: dict[str, tuple[int, Any]] = {
            "/getotp": (200, "sent"),
            "/authen": (200, "ok"),
            "/register": (200, {"student_id": 7}),
        }

    async def __call__(self, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        self.calls.append((path, payload))
        return self.replies[path]


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def make(kv: FakeKv, api: FakeApi) -> TestClient:
    return TestClient(create_app(SETTINGS, lambda: kv, api), follow_redirects=False)


def test_pages_show_hostname_and_set_httponly_cookie() -> None:
    kv, api = FakeKv(), FakeApi()
    with make(kv, api) as client:
        r = client.get("/")
        assert r.status_code == 200
        assert socket.gethostname() in r.text
        cookie = r.headers["set-cookie"]
        assert f"{SESSION_COOKIE}=" in cookie
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
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
        assert api.calls[-1] == ("/register", {"firstname": "Dan", "lastname": "Ho", "email": "dan@example.org"})
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
