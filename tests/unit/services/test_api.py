from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr

from registration.api.app import ApiSettings, create_app
from registration.otp.rules import OtpPolicy
from tests.unit.services.fakes import FakeBackend

AUTH = ("api", "s3cret-api-password")
EMAIL = "bob@example.org"


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(OtpPolicy(otp_ttl=300, max_attempts=5, lock_seconds=900, auth_ttl=600))


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    app = create_app(ApiSettings(API_USER=AUTH[0], API_PASSWORD=SecretStr(AUTH[1])), rpc=backend)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def post(client: TestClient, path: str, payload: object, prefix: str = "/api") -> Response:
    response: Response = client.post(f"{prefix}{path}", json=payload, auth=AUTH)
    return response


def eligible(client: TestClient, *emails: str) -> None:
    r = post(client, "/create_email_list", {"email_list": list(emails)})
    assert r.status_code == 200, r.text


def get_authenticated(client: TestClient, backend: FakeBackend, email: str = EMAIL) -> None:
    assert post(client, "/getotp", {"email": email}).json() == {"results": "sent"}
    r = post(client, "/authen", {"email": email, "otp": backend.last_otp_for(email)})
    assert r.status_code == 200 and r.json() == {"results": "ok"}


# --- request validation: 422, never 500 -------------------------------------------------------


@pytest.mark.parametrize("path", ["/create_email_list", "/getotp", "/authen", "/register"])
@pytest.mark.parametrize("prefix", ["", "/api"])
def test_malformed_json_is_422(client: TestClient, path: str, prefix: str) -> None:
    r = client.post(
        f"{prefix}{path}", content=b'{"email": "x@y.org",', headers={"content-type": "application/json"}, auth=AUTH
    )
    assert r.status_code == 422
    assert r.json()["results"] == "invalid_request"


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/create_email_list", {}),
        ("/create_email_list", {"email_list": "a@b.org"}),
        ("/create_email_list", {"email_list": []}),
        ("/create_email_list", {"email_list": ["not-an-email"]}),
        ("/getotp", {}),
        ("/getotp", {"email": None}),
        ("/getotp", {"email": 12}),
        ("/getotp", {"email": "no-at-sign"}),
        ("/getotp", {"email": EMAIL, "extra": 1}),
        ("/getotp", []),
        ("/getotp", "just a string"),
        ("/authen", {"email": EMAIL}),
        ("/authen", {"otp": "123456"}),
        ("/authen", {"email": EMAIL, "otp": "12345"}),
        ("/authen", {"email": EMAIL, "otp": "abcdef"}),
        ("/register", {"firstname": "A", "lastname": "B"}),
        ("/register", {"firstname": "", "lastname": "B", "email": EMAIL}),
        ("/register", {"firstname": "A" * 101, "lastname": "B", "email": EMAIL}),
    ],
)
def test_missing_or_bad_fields_are_422(client: TestClient, backend: FakeBackend, path: str, payload: object) -> None:
    r = post(client, path, payload)
    assert r.status_code == 422, r.text
    assert backend.calls == []  # nothing reached the workers


def test_non_json_body_is_422(client: TestClient) -> None:
    r = client.post("/api/getotp", content=b"email=x@y.org", headers={"content-type": "text/plain"}, auth=AUTH)
    assert r.status_code == 422
    r = client.post("/api/getotp", auth=AUTH)
    assert r.status_code == 422


def test_422_does_not_echo_the_submitted_values(client: TestClient) -> None:
    r = post(client, "/authen", {"email": EMAIL, "otp": "98765x"})
    assert r.status_code == 422
    assert "98765x" not in r.text


# --- auth, routing, docs ----------------------------------------------------------------------


def test_basic_auth_required(client: TestClient, backend: FakeBackend) -> None:
    assert client.post("/api/getotp", json={"email": EMAIL}).status_code == 401
    r = client.post("/api/getotp", json={"email": EMAIL}, auth=(AUTH[0], "wrong"))
    assert r.status_code == 401
    assert "basic" in r.headers["www-authenticate"].lower()
    assert client.post("/getotp", json={"email": EMAIL}, auth=("someone", AUTH[1])).status_code == 401
    assert backend.calls == []


def test_healthz_without_auth(client: TestClient) -> None:
    for path in ("/healthz", "/api/healthz"):
        r = client.get(path)
        assert r.status_code == 200
        assert r.json()["status"] == "ok"


def test_docs_and_schema_under_api_prefix(client: TestClient) -> None:
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/getotp", "/api/authen", "/api/register", "/api/create_email_list"} <= set(paths)
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    assert "/api/openapi.json" in docs.text


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_routes_work_with_and_without_prefix(client: TestClient, backend: FakeBackend, prefix: str) -> None:
    eligible(client, EMAIL)
    r = post(client, "/getotp", {"email": EMAIL}, prefix=prefix)
    assert r.status_code == 200 and r.json() == {"results": "sent"}


# --- the flow and its security rules ------------------------------------------------------------


def test_full_flow(client: TestClient, backend: FakeBackend) -> None:
    r = post(client, "/create_email_list", {"email_list": [EMAIL, "carol@example.org"]})
    assert r.json() == {"results": {"added": 2, "total": 2, "rejected": []}}
    get_authenticated(client, backend)
    r = post(client, "/register", {"firstname": "Bob", "lastname": "Builder", "email": EMAIL})
    assert r.status_code == 200
    student_id = r.json()["results"]["student_id"]
    assert backend.db.students[EMAIL] == (student_id, "Bob", "Builder")
    assert backend.db.enrolls == [(1, student_id, "Bob", "Builder")]
    assert backend.confirmations == [
        {"student_id": student_id, "firstname": "Bob", "lastname": "Builder", "email": EMAIL}
    ]
    # order of the RPC calls, as in the original system
    order = [(s, m) for s, m, _ in backend.calls]
    assert order[-4:] == [
        ("student", "insert"),
        ("otp", "consume_authenticated"),
        ("enroll", "insert"),
        ("email", "send"),
    ]


def test_unknown_email_refused_and_no_mail(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    r = post(client, "/getotp", {"email": "eve@example.org"})
    assert r.status_code == 403
    assert r.json() == {"results": "unknown_email"}
    assert backend.otp_mails == []


def test_api_never_returns_the_otp(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    texts: list[str] = []
    for _ in range(3):
        r = post(client, "/getotp", {"email": EMAIL})
        texts.append(r.text + json.dumps(dict(r.headers)))
    codes = {m["otp"] for m in backend.otp_mails}
    assert len(backend.otp_mails) == 3
    code = backend.last_otp_for(EMAIL)
    for attempt in ("000000" if code != "000000" else "111111", code):
        r = post(client, "/authen", {"email": EMAIL, "otp": attempt})
        texts.append(r.text + json.dumps(dict(r.headers)))
    r = post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL})
    texts.append(r.text)
    for text in texts:
        for c in codes:
            assert c not in text


def test_wrong_otp_then_lockout_refuses_right_otp(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    post(client, "/getotp", {"email": EMAIL})
    code = backend.last_otp_for(EMAIL)
    bad = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        r = post(client, "/authen", {"email": EMAIL, "otp": bad})
        assert r.status_code == 401 and r.json() == {"results": "invalid_otp"}
    r = post(client, "/authen", {"email": EMAIL, "otp": code})
    assert r.status_code == 429 and r.json() == {"results": "locked"}
    r = post(client, "/getotp", {"email": EMAIL})
    assert r.status_code == 429
    r = post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL})
    assert r.status_code == 403


def test_otp_is_single_use_via_api(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    get_authenticated(client, backend)
    r = post(client, "/authen", {"email": EMAIL, "otp": backend.last_otp_for(EMAIL)})
    assert r.status_code == 401 and r.json() == {"results": "expired"}


def test_register_requires_authen(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    r = post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL})
    assert r.status_code == 403 and r.json() == {"results": "not_authenticated"}
    assert backend.db.students == {}
    # an OTP requested but not verified is not enough
    post(client, "/getotp", {"email": EMAIL})
    r = post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL})
    assert r.status_code == 403
    # authenticated for another e-mail is not enough either
    eligible(client, "other@example.org")
    get_authenticated(client, backend, "other@example.org")
    r = post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL})
    assert r.status_code == 403
    assert EMAIL not in backend.db.students


def test_authenticated_marker_is_consumed_by_register(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    get_authenticated(client, backend)
    assert post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL}).status_code == 200
    r = post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL})
    assert r.status_code == 403 and r.json() == {"results": "not_authenticated"}


def test_register_twice_refused(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    get_authenticated(client, backend)
    first = post(client, "/register", {"firstname": "Bob", "lastname": "B", "email": EMAIL})
    assert first.status_code == 200
    get_authenticated(client, backend)
    second = post(client, "/register", {"firstname": "Robert", "lastname": "B", "email": EMAIL.upper()})
    assert second.status_code == 409
    assert second.json() == {"results": "already_registered"}
    assert len(backend.db.students) == 1
    assert len(backend.db.enrolls) == 1
    assert len(backend.confirmations) == 1


def test_rpc_timeout_is_504_not_500(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    backend.timeout_on.add(("email_otp", "send"))
    r = post(client, "/getotp", {"email": EMAIL})
    assert r.status_code == 504
    assert r.json() == {"results": "backend_timeout"}
    assert backend.last_otp_for is not None
    code = backend.store.peek_code(EMAIL)
    assert code is not None and code not in r.text
