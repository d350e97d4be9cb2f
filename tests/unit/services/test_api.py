from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr

from registration.api.app import ApiSettings, create_app
from registration.common.emails import InvalidEmail, normalize_email
from registration.common.rpc import RpcRemoteError, RpcTimeout, RpcUnavailable
from registration.common.signing import sign, verify
from registration.otp.rules import OtpPolicy
from tests.unit.services.fakes import FakeBackend, FakeDb, fake_database

AUTH = ("api", "s3cret-api-password")
ADMIN = ("admin", "s3cret-admin-password")
EMAIL = "bob@example.org"
POLICY = OtpPolicy(otp_ttl=300, max_attempts=5, lock_seconds=900, auth_ttl=600, resend_window=60)
PROOF_KEY = "unit-test-register-proof-key"


def proof(email: str, ttl: float = 600, key: str = PROOF_KEY) -> str:
    """A proof as a successful /authen for ``email`` hands out (the API's key of these tests)."""
    return sign(key.encode(), "register", {"e": normalize_email(email)}, expires_at=time.time() + ttl)


def settings(**overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "API_USER": AUTH[0],
        "API_PASSWORD": SecretStr(AUTH[1]),
        "ADMIN_USER": ADMIN[0],
        "ADMIN_PASSWORD": SecretStr(ADMIN[1]),
        # Short budgets: a test that runs out of its deadline takes about this long.
        "REQUEST_DEADLINE": 1.0,
        "RPC_TIMEOUT": 0.5,
        "PROOF_KEY": SecretStr(PROOF_KEY),
    }
    values.update(overrides)
    return ApiSettings(**values)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(POLICY)


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    app = create_app(settings(), rpc=backend)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def post(
    client: TestClient, path: str, payload: object, prefix: str = "/api", auth: tuple[str, str] = AUTH, **kw: Any
) -> Response:
    """POST; a /register body without a proof gets a valid one for its e-mail (the rules behind the
    proof are what most tests check; the proof's own tests give theirs)."""
    if path == "/register" and isinstance(payload, dict) and "proof" not in payload:
        with contextlib.suppress(InvalidEmail):
            payload = {**payload, "proof": proof(str(payload.get("email")))}
    response: Response = client.post(f"{prefix}{path}", json=payload, auth=auth, **kw)
    return response


def eligible(client: TestClient, *emails: str) -> None:
    r = post(client, "/create_email_list", {"email_list": list(emails)}, auth=ADMIN)
    assert r.status_code == 200, r.text


def get_authenticated(client: TestClient, backend: FakeBackend, email: str = EMAIL) -> str:
    """Request and verify an OTP; the proof /authen answered."""
    assert post(client, "/getotp", {"email": email}).json() == {"results": "sent"}
    r = post(client, "/authen", {"email": email, "otp": backend.last_otp_for(email)})
    assert r.status_code == 200 and r.json()["results"] == "ok", r.text
    return str(r.json()["proof"])


# --- request validation: 422, never 500 -------------------------------------------------------


@pytest.mark.parametrize("path", ["/getotp", "/authen", "/register"])
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
    r = post(client, path, payload, auth=ADMIN if path == "/create_email_list" else AUTH)
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
    r = client.post("/api/getotp", json={"email": EMAIL})
    assert r.status_code == 401 and r.json() == {"results": "invalid_credentials"}
    r = client.post("/api/getotp", json={"email": EMAIL}, auth=(AUTH[0], "wrong"))
    assert r.status_code == 401
    assert "basic" in r.headers["www-authenticate"].lower()
    assert client.post("/getotp", json={"email": EMAIL}, auth=("someone", AUTH[1])).status_code == 401
    assert backend.calls == []


def test_eligible_list_needs_the_admin_credential(client: TestClient, backend: FakeBackend) -> None:
    for prefix in ("", "/api"):
        r = post(client, "/create_email_list", {"email_list": [EMAIL]}, prefix=prefix, auth=AUTH)
        assert r.status_code == 403 and r.json() == {"results": "forbidden"}
    # and the admin credential is for the admin routes only
    r = post(client, "/getotp", {"email": EMAIL}, auth=ADMIN)
    assert r.status_code == 403 and r.json() == {"results": "forbidden"}
    assert backend.calls == []
    r = post(client, "/create_email_list", {"email_list": [EMAIL]}, auth=ADMIN)
    assert r.status_code == 200 and r.json()["results"]["added"] == 1


def test_without_an_admin_password_the_admin_routes_refuse_everyone(backend: FakeBackend) -> None:
    app = create_app(settings(ADMIN_PASSWORD=None), rpc=backend)
    with TestClient(app) as c:
        for auth in (AUTH, ADMIN, ("admin", "")):
            r = c.post("/api/create_email_list", json={"email_list": [EMAIL]}, auth=auth)
            assert r.status_code in (401, 403), auth
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
    # Its own policy (HAProxy keeps it): the inline script by its hash, 'unsafe-inline' never.
    policy = docs.headers["content-security-policy"]
    script = re.findall(r"<script>(.*?)</script>", docs.text, flags=re.DOTALL)
    assert len(script) == 1
    digest = base64.b64encode(hashlib.sha256(script[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_routes_work_with_and_without_prefix(client: TestClient, backend: FakeBackend, prefix: str) -> None:
    eligible(client, EMAIL)
    r = post(client, "/getotp", {"email": EMAIL}, prefix=prefix)
    assert r.status_code == 200 and r.json() == {"results": "sent"}


# --- the flow and its security rules ------------------------------------------------------------


def test_full_flow(client: TestClient, backend: FakeBackend) -> None:
    r = post(client, "/create_email_list", {"email_list": [EMAIL, "carol@example.org"]}, auth=ADMIN)
    assert r.json() == {"results": {"added": 2, "total": 2, "rejected": []}}
    given = get_authenticated(client, backend)
    assert verify(PROOF_KEY.encode(), "register", given, now=time.time()) is not None
    r = post(client, "/register", {"firstname": "Bob", "lastname": "Builder", "email": EMAIL, "proof": given})
    assert r.status_code == 200
    student_id = r.json()["results"]["student_id"]
    assert backend.db.students[EMAIL][:3] == (student_id, "Bob", "Builder")
    assert backend.db.enrolls == [(1, student_id, "Bob", "Builder")]
    assert backend.confirmations == [
        {"student_id": student_id, "firstname": "Bob", "lastname": "Builder", "email": EMAIL}
    ]
    # the student and the enrolment are one call (one transaction), then the marker, then the mail
    order = [(s, m) for s, m, _ in backend.calls]
    assert order[-4:] == [
        ("otp", "is_authenticated"),
        ("student", "register"),
        ("otp", "consume_authenticated"),
        ("email", "send"),
    ]


def test_an_unknown_email_gets_the_same_answers_and_no_mail(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    answers = []
    for email in ("eve@example.org", EMAIL):  # not on the list; on it
        got = post(client, "/getotp", {"email": email})
        wrong = post(client, "/authen", {"email": email, "otp": "000000"})
        answers.append((got.status_code, got.json(), wrong.status_code, wrong.json()))
    assert answers[0] == answers[1] == (200, {"results": "sent"}, 401, {"results": "invalid_otp"})
    assert [m["email"] for m in backend.otp_mails] == [EMAIL]  # nothing mailed to the unknown address


def test_api_never_returns_the_otp(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    texts: list[str] = []
    for _ in range(3):
        r = post(client, "/getotp", {"email": EMAIL})
        texts.append(r.text + json.dumps(dict(r.headers)))
        backend.clock.advance(POLICY.resend_window + 1)  # past the window: a new code each time
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


def test_redis_never_holds_the_otp(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    post(client, "/getotp", {"email": EMAIL})
    code = backend.last_otp_for(EMAIL)

    async def dump() -> str:
        keys = [str(k) for k in await backend.redis.keys("*")]
        values = [str(await backend.redis.get(k)) for k in keys if await backend.redis.type(k) == "string"]
        return " ".join(keys + values)

    assert code not in asyncio.run(dump())


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
    # the lock is this source's (here the client address): the address itself still gets its OTPs
    r = post(client, "/getotp", {"email": EMAIL})
    assert r.status_code == 200
    r = post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL})
    assert r.status_code == 403


def test_otp_is_single_use_via_api(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    get_authenticated(client, backend)
    r = post(client, "/authen", {"email": EMAIL, "otp": backend.last_otp_for(EMAIL)})
    assert r.status_code == 401 and r.json() == {"results": "expired"}


def test_register_accepts_only_a_proof_from_authen_for_that_email(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL, "other@example.org")
    body = {"firstname": "B", "lastname": "C", "email": EMAIL}
    other_proof = get_authenticated(client, backend, "other@example.org")
    get_authenticated(client, backend)  # the marker is there: only the proof is wrong below
    for bad in (
        "",  # none
        "forged.token",
        proof(EMAIL, key="not-the-api-key"),  # signed by someone else
        proof(EMAIL, ttl=-1),  # expired
        other_proof,  # another address's
        proof(EMAIL) + "x",
    ):
        r = post(client, "/register", body | {"proof": bad})
        assert r.status_code == 403 and r.json() == {"results": "invalid_proof"}, bad
    assert backend.calls_to("student", "register") == 0 and backend.db.students == {}
    assert post(client, "/register", body).status_code == 200


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


# --- deadlines and retries: 503/504 with a code, never 500 --------------------------------------


def test_a_backend_that_never_answers_is_504_after_retries_not_500(backend: FakeBackend) -> None:
    # Attempts of 0.3 s in a 2.5 s budget: room for a retry even on a loaded machine.
    app = create_app(settings(REQUEST_DEADLINE=2.5, RPC_TIMEOUT=0.3), rpc=backend)
    with TestClient(app, raise_server_exceptions=False) as client:
        eligible(client, EMAIL)
        backend.timeout_on.add(("email_otp", "send"))
        r = post(client, "/getotp", {"email": EMAIL})
        assert r.status_code == 504
        assert r.json() == {"results": "backend_timeout"}
        assert backend.calls_to("email_otp", "send") >= 2  # repeated within the deadline
        # no mail went out: the claim on the resend window is released, so a new request mails at once
        assert backend.calls_to("otp", "release_sent") == 1
        backend.timeout_on.clear()
        assert post(client, "/getotp", {"email": EMAIL}).status_code == 200
    assert len(backend.otp_mails) == 1


def test_a_broker_that_stays_away_is_503(backend: FakeBackend) -> None:
    backend.fail_before[("otp", "create")] = [RpcUnavailable("broker away") for _ in range(100)]
    # A budget that leaves room for a retry even on a loaded machine (each failure is instant).
    with TestClient(create_app(settings(REQUEST_DEADLINE=4.0), rpc=backend), raise_server_exceptions=False) as client:
        r = post(client, "/getotp", {"email": EMAIL})
    assert r.status_code == 503 and r.json() == {"results": "backend_unavailable"}
    assert r.headers["retry-after"]
    assert backend.calls_to("otp", "create") >= 2


def test_a_worker_bug_is_502_at_once(client: TestClient, backend: FakeBackend) -> None:
    backend.fail_before[("otp", "create")] = [RpcRemoteError("KeyError: otp.create failed", transient=False)]
    r = post(client, "/getotp", {"email": EMAIL})
    assert r.status_code == 502 and r.json() == {"results": "backend_error"}
    assert backend.calls_to("otp", "create") == 1  # not a reason to repeat


@pytest.fixture
def patient(backend: FakeBackend) -> Iterator[TestClient]:
    """A client whose requests have room for their retries even on a loaded machine: with the short
    default budget (1 s), a retry that must succeed ran out of it under a lab's load (504)."""
    with TestClient(create_app(settings(REQUEST_DEADLINE=5.0), rpc=backend), raise_server_exceptions=False) as c:
        yield c


def test_calls_ride_out_a_broker_move(patient: TestClient, backend: FakeBackend) -> None:
    client = patient
    eligible(client, EMAIL)
    backend.fail_before[("otp", "create")] = [RpcUnavailable("publish failed"), RpcUnavailable("publish failed")]
    backend.fail_before[("email_otp", "send")] = [RpcUnavailable("lost", maybe_delivered=True)]
    r = post(client, "/getotp", {"email": EMAIL})
    assert r.status_code == 200 and r.json() == {"results": "sent"}
    assert len(backend.otp_mails) == 1


def test_a_lost_reply_to_otp_create_mails_one_valid_code(patient: TestClient, backend: FakeBackend) -> None:
    client = patient
    eligible(client, EMAIL)
    backend.fail_after[("otp", "create")] = [RpcTimeout("reply lost")]
    assert post(client, "/getotp", {"email": EMAIL}).status_code == 200
    assert len(backend.otp_mails) == 1  # the lost code was never mailed; the repeat's code is
    r = post(client, "/authen", {"email": EMAIL, "otp": backend.last_otp_for(EMAIL)})
    assert r.status_code == 200


def test_a_lost_reply_to_a_mail_sends_no_second_mail(patient: TestClient, backend: FakeBackend) -> None:
    client = patient
    eligible(client, EMAIL)
    backend.fail_after[("email_otp", "send")] = [RpcTimeout("reply lost")]
    assert post(client, "/getotp", {"email": EMAIL}).status_code == 200
    assert backend.calls_to("email_otp", "send") == 2
    assert len(backend.otp_mails) == 1


def test_a_lost_reply_to_authen_still_authenticates(patient: TestClient, backend: FakeBackend) -> None:
    client = patient
    eligible(client, EMAIL)
    post(client, "/getotp", {"email": EMAIL})
    backend.fail_after[("otp", "authen")] = [RpcTimeout("reply lost")]
    # the first run used the OTP; the repeat (same key) gets the first answer, not "expired"
    r = post(client, "/authen", {"email": EMAIL, "otp": backend.last_otp_for(EMAIL)})
    assert r.status_code == 200 and r.json()["results"] == "ok"


def test_a_retried_register_creates_one_student_and_one_enrolment(patient: TestClient, backend: FakeBackend) -> None:
    client = patient
    eligible(client, EMAIL)
    get_authenticated(client, backend)
    backend.fail_after[("student", "register")] = [RpcTimeout("reply lost"), RpcUnavailable("x", maybe_delivered=True)]
    backend.fail_after[("email", "send")] = [RpcTimeout("reply lost")]
    r = post(client, "/register", {"firstname": "Bob", "lastname": "B", "email": EMAIL})
    assert r.status_code == 200, r.text
    assert backend.calls_to("student", "register") == 3
    assert len(backend.db.students) == 1 and len(backend.db.enrolls) == 1
    assert len(backend.confirmations) == 1
    assert r.json()["results"]["student_id"] == backend.db.students[EMAIL][0]


def test_a_student_id_reused_after_a_database_restore_still_gets_its_confirmation(
    client: TestClient, backend: FakeBackend
) -> None:
    eligible(client, EMAIL, "carol@example.org")
    get_authenticated(client, backend)
    first = post(client, "/register", {"firstname": "Bob", "lastname": "B", "email": EMAIL}).json()["results"]
    backend.db = FakeDb()  # `fab restore` of a backup taken before: ids count from there again
    backend.database = fake_database(backend.db)
    get_authenticated(client, backend, "carol@example.org")
    r = post(client, "/register", {"firstname": "Carol", "lastname": "C", "email": "carol@example.org"})
    assert r.json()["results"]["student_id"] == first["student_id"]
    assert [m["email"] for m in backend.confirmations] == [EMAIL, "carol@example.org"]


def test_a_database_move_mid_register_neither_fails_nor_duplicates(backend: FakeBackend) -> None:
    app = create_app(settings(REQUEST_DEADLINE=10.0, RPC_TIMEOUT=5.0), rpc=backend)
    with TestClient(app) as client:
        eligible(client, EMAIL)
        get_authenticated(client, backend)
        backend.db.drop_after_commit = 1  # COMMIT reached the server; its acknowledgement did not
        backend.db.refuse_connects = 2  # and the server is away for two connection attempts
        r = post(client, "/register", {"firstname": "Bob", "lastname": "B", "email": EMAIL})
    assert r.status_code == 200, r.text
    assert len(backend.db.students) == 1 and len(backend.db.enrolls) == 1
    assert backend.db.commits == 2  # the first transaction, and its idempotent re-run


def test_a_replayed_register_returns_the_same_success(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    get_authenticated(client, backend)
    key = {"Idempotency-Key": "reg-0123456789abcdef"}
    body = {"firstname": "Bob", "lastname": "B", "email": EMAIL}
    first = post(client, "/register", body, headers=key)
    again = post(client, "/register", body, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert len(backend.db.students) == 1 and len(backend.db.enrolls) == 1
    assert len(backend.confirmations) == 1
    # another request (another key) is still refused
    assert post(client, "/register", body).status_code == 403


def test_a_replayed_getotp_key_sends_one_mail(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    key = {"Idempotency-Key": "getotp-0123456789abcdef"}
    replies = [post(client, "/getotp", {"email": EMAIL}, headers=key) for _ in range(8)]
    assert [(r.status_code, r.json()) for r in replies] == [(200, {"results": "sent"})] * 8
    assert len(backend.otp_mails) == 1  # the first request's mail, nothing new after it
    assert backend.calls_to("email_otp", "send") == 1
    r = post(client, "/authen", {"email": EMAIL, "otp": backend.last_otp_for(EMAIL)})
    assert r.status_code == 200  # and the one code mailed is the live one


def test_a_replayed_key_whose_gateway_died_before_the_mail_mails_once(client: TestClient, backend: FakeBackend) -> None:
    """The first gateway issued the code and died before mailing it (make chaos kill-broker-worker):
    HAProxy's repeat of the keyed request reaches this one, which must mail, not answer "already sent"."""
    eligible(client, EMAIL)
    key = "getotp-0123456789abcdef"
    dead = asyncio.run(backend.call("otp", "create", email=EMAIL, client="", key=key, attempt="died-before-mail"))
    assert dead["status"] == "created"
    replies = [post(client, "/getotp", {"email": EMAIL}, headers={"Idempotency-Key": key}) for _ in range(3)]
    assert [r.status_code for r in replies] == [200] * 3
    assert len(backend.otp_mails) == 1, "the repeat mails a code of its own; its own repeats mail nothing"
    assert backend.calls_to("otp", "mark_mailed") == 1
    r = post(client, "/authen", {"email": EMAIL, "otp": backend.last_otp_for(EMAIL)})
    assert r.status_code == 200


def test_a_replay_after_a_mail_that_failed_mails_at_once(backend: FakeBackend) -> None:
    app = create_app(settings(REQUEST_DEADLINE=1.0, RPC_TIMEOUT=0.3), rpc=backend)
    with TestClient(app, raise_server_exceptions=False) as client:
        eligible(client, EMAIL)
        key = {"Idempotency-Key": "getotp-0123456789abcdef"}
        backend.timeout_on.add(("email_otp", "send"))
        assert post(client, "/getotp", {"email": EMAIL}, headers=key).status_code == 504
        backend.timeout_on.clear()
        assert post(client, "/getotp", {"email": EMAIL}, headers=key).status_code == 200
    assert len(backend.otp_mails) == 1


def test_authen_is_rate_limited_per_client_address(backend: FakeBackend) -> None:
    backend.otp.policy = OtpPolicy(rate_per_client=3, max_attempts=100, max_attempts_per_client=100)
    with TestClient(create_app(settings(), rpc=backend), client=("10.20.0.2", 40000)) as haproxy:
        eligible(haproxy, EMAIL)

        def authen(forwarded: str) -> Response:
            return post(haproxy, "/authen", {"email": EMAIL, "otp": "000000"}, headers={"X-Forwarded-For": forwarded})

        assert [authen("203.0.113.7").status_code for _ in range(3)] == [401] * 3
        limited = authen("203.0.113.7")
        assert limited.status_code == 429 and limited.json() == {"results": "rate_limited"}
        assert 1 <= int(limited.headers["retry-after"]) <= POLICY.rate_window
        assert authen("203.0.113.8").status_code == 401  # another client


def test_wrong_codes_count_against_the_session_the_ui_names(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    post(client, "/getotp", {"email": EMAIL})
    code = backend.last_otp_for(EMAIL)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    mallory = {"X-Client-Session": "mallory-session-0123456789"}
    statuses = [post(client, "/authen", {"email": EMAIL, "otp": wrong}, headers=mallory).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    owner = {"X-Client-Session": "owner-session-0123456789ab"}
    r = post(client, "/authen", {"email": EMAIL, "otp": code}, headers=owner)
    assert r.status_code == 200 and r.json()["results"] == "ok"
    sources = {kw["source"] for s, m, kw in backend.calls if (s, m) == ("otp", "authen")}
    assert sources == {"mallory-session-0123456789", "owner-session-0123456789ab"}


def test_a_bad_idempotency_key_is_422(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    for key in ("short", "x" * 129, "has space in it!!"):
        r = post(client, "/getotp", {"email": EMAIL}, headers={"Idempotency-Key": key})
        assert r.status_code == 422 and r.json() == {"results": "invalid_idempotency_key"}


# --- idempotent getotp and rate limits -----------------------------------------------------------


def test_getotp_repeated_within_the_window_sends_one_mail(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    for _ in range(3):
        r = post(client, "/getotp", {"email": EMAIL})
        assert r.status_code == 200 and r.json() == {"results": "sent"}
    assert len(backend.otp_mails) == 1
    code = backend.last_otp_for(EMAIL)
    assert post(client, "/authen", {"email": EMAIL, "otp": code}).status_code == 200
    # once that code is used, a new request mails a new code at once
    assert post(client, "/getotp", {"email": EMAIL}).status_code == 200
    assert len(backend.otp_mails) == 2


def test_getotp_is_rate_limited_per_email(client: TestClient, backend: FakeBackend) -> None:
    eligible(client, EMAIL)
    statuses = [post(client, "/getotp", {"email": EMAIL}).status_code for _ in range(POLICY.rate_per_email)]
    assert statuses == [200] * POLICY.rate_per_email
    r = post(client, "/getotp", {"email": EMAIL})
    assert r.status_code == 429 and r.json() == {"results": "rate_limited"}
    assert 1 <= int(r.headers["retry-after"]) <= POLICY.rate_window
    backend.clock.advance(POLICY.rate_window)
    assert post(client, "/getotp", {"email": EMAIL}).status_code == 200


def test_getotp_is_rate_limited_per_client_address_from_haproxy(backend: FakeBackend) -> None:
    backend.otp.policy = OtpPolicy(rate_per_client=3, rate_per_email=100, resend_window=0)
    app = create_app(settings(), rpc=backend)
    with TestClient(app, client=("10.20.0.2", 40000)) as haproxy:  # the lb node's address
        eligible(haproxy, EMAIL)

        def getotp(forwarded: str) -> int:
            return post(haproxy, "/getotp", {"email": EMAIL}, headers={"X-Forwarded-For": forwarded}).status_code

        # a client that writes its own X-Forwarded-For is still counted by the address HAProxy saw
        assert [getotp(f"198.51.100.{i}, 203.0.113.7") for i in range(3)] == [200, 200, 200]
        assert getotp("198.51.100.99, 203.0.113.7") == 429
        assert getotp("203.0.113.8") == 200  # another client
    clients = {kw["client"] for s, m, kw in backend.calls if (s, m) == ("otp", "create")}
    assert clients == {"203.0.113.7", "203.0.113.8"}


def test_forwarded_for_is_ignored_from_an_untrusted_peer(backend: FakeBackend) -> None:
    app = create_app(settings(FORWARDED_ALLOW_IPS="10.20.0.2"), rpc=backend)
    with TestClient(app, client=("192.0.2.50", 40000)) as direct:
        post(direct, "/getotp", {"email": EMAIL}, headers={"X-Forwarded-For": "203.0.113.7"})
    assert [kw["client"] for s, m, kw in backend.calls if (s, m) == ("otp", "create")] == ["192.0.2.50"]
