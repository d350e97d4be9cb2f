"""The API's routes, by resource: the eligible list (admin), OTPs, registrations, health.

Request bodies are validated here (unknown fields refused); replies are ``{"results": ...}``.
"""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from contextlib import suppress
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from registration.api.auth import Roles
from registration.api.backend import Backend, Rpc, idempotency_key, json_results, refusal, state_of
from registration.common.emails import normalize_email
from registration.common.metrics import REGISTRATIONS
from registration.common.rpc import RpcError
from registration.common.signing import TOKEN_MAX_LEN, sign, verify
from registration.common.text import clean_name

log = logging.getLogger(__name__)

PROOF_PURPOSE: Final = "register"
# The UI names the browser session a check comes from (an opaque digest of it), so that wrong codes
# are counted per session: one visitor's guesses lock that visitor out, not the address's owner.
SESSION_HEADER: Final = "x-client-session"
_SESSION_RE: Final = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _email(value: str) -> str:
    # email-validator's message never repeats the input; pydantic reports it as a value_error
    return normalize_email(value)


Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(_email)]
Name = Annotated[str, StringConstraints(max_length=400), AfterValidator(clean_name)]
Otp = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{6}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailListIn(_Body):
    email_list: Annotated[list[Email], Field(min_length=1, max_length=10_000)]


class EmailIn(_Body):
    email: Email


class AuthenIn(_Body):
    email: Email
    otp: Otp


class RegisterIn(_Body):
    firstname: Name
    lastname: Name
    email: Email
    # What a successful /authen for this e-mail answered: nobody registers an address they did not verify.
    proof: Annotated[str, StringConstraints(max_length=TOKEN_MAX_LEN)]


class Results(BaseModel):
    results: Any


def admin_routes(backend: Backend, roles: Roles) -> APIRouter:
    """``/create_email_list``: the admin credential only."""
    admin = APIRouter(dependencies=[roles.require("admin")])

    @admin.post("/create_email_list", response_model=Results)
    async def create_email_list(body: EmailListIn, rpc_: Rpc) -> JSONResponse:
        until = backend.deadline()
        out = await backend.call(rpc_, until, "otp", "create_email_list", email_list=list(body.email_list))
        return json_results(200, out)

    return admin


def user_routes(backend: Backend, roles: Roles, proof_key: bytes, proof_ttl: int) -> APIRouter:
    """The UI's routes (the api credential): OTPs, then the registration."""
    router = APIRouter(dependencies=[roles.require("api")])
    _otp_routes(router, backend, proof_key, proof_ttl)
    _registration_routes(router, backend, proof_key)
    return router


def _client(request: Request) -> str:
    return str(getattr(request.state, "client", ""))


def _session_of(request: Request) -> str:
    given = request.headers.get(SESSION_HEADER, "")
    return given if _SESSION_RE.fullmatch(given) else ""


def _otp_routes(router: APIRouter, backend: Backend, proof_key: bytes, proof_ttl: int) -> None:
    @router.post("/getotp", response_model=Results)
    async def getotp(body: EmailIn, request: Request, rpc_: Rpc) -> JSONResponse:
        until, key = backend.deadline(), idempotency_key(request)
        # This HTTP request: its own retries after a lost reply get a fresh code; a replay of the
        # key (another request) gets the first answer and mails nothing.
        attempt = uuid.uuid4().hex
        created = await backend.call(
            rpc_, until, "otp", "create", email=body.email, client=_client(request), key=key, attempt=attempt
        )
        state = state_of(created)
        # The same answer whether the address is on the list or not (no mail then), and for a repeat
        # within the resend window or of the same key (no second mail).
        if state in ("already_sent", "unknown_email"):
            return json_results(200, "sent")
        if state == "rate_limited":
            retry_after = int(created.get("retry_after") or 60)
            return refusal(state, {"Retry-After": str(max(1, retry_after))})
        if state != "created":
            return refusal(state)
        otp = created.get("otp")
        if not isinstance(otp, str):
            return json_results(502, "backend_error")
        del created  # the code never goes into a response
        try:
            await backend.call(rpc_, until, "email_otp", "send", otp=otp, email=body.email, key=key)
        except HTTPException:
            # No mail went out: let the next request issue a code at once (best effort).
            with suppress(RpcError):
                await rpc_.call("otp", "release_sent", timeout=1.0, email=body.email, key=key)
            raise
        # Mailed: a replay of the key now answers "sent" and mails nothing. Until then a replay (this
        # gateway having died before the mail) issues and mails a code of its own. Best effort: if the
        # mark is lost, a replay mails once more.
        try:
            await backend.call(rpc_, until, "otp", "mark_mailed", email=body.email, key=key, attempt=attempt)
        except HTTPException:
            log.warning("getotp: the mail went out but could not be recorded; a replay of its key mails again")
        return json_results(200, "sent")

    @router.post("/authen", response_model=Results)
    async def authen(body: AuthenIn, request: Request, rpc_: Rpc) -> JSONResponse:
        until, key = backend.deadline(), idempotency_key(request)
        out = await backend.call(
            rpc_,
            until,
            "otp",
            "authen",
            email=body.email,
            otp=body.otp,
            key=key,
            client=_client(request),
            source=_session_of(request),
        )
        state = state_of(out)
        if state == "ok":
            # The proof /register asks for: bound to this e-mail, as long as the worker's marker lives.
            proof = sign(proof_key, PROOF_PURPOSE, {"e": body.email}, expires_at=time.time() + proof_ttl)
            return JSONResponse(status_code=200, content={"results": "ok", "proof": proof})
        if state == "unknown_email":  # a worker of the previous version: answered as any wrong code
            return refusal("invalid_otp")
        if state == "rate_limited":
            retry_after = int(out.get("retry_after") or 60)
            return refusal(state, {"Retry-After": str(max(1, retry_after))})
        return refusal(state)


def _registration_routes(router: APIRouter, backend: Backend, proof_key: bytes) -> None:
    @router.post("/register", response_model=Results)
    async def register(body: RegisterIn, request: Request, rpc_: Rpc) -> JSONResponse:
        claims = verify(proof_key, PROOF_PURPOSE, body.proof, now=time.time())
        if claims is None or claims.get("e") != body.email:
            return refusal("invalid_proof")  # before any call: forged, expired or another address's
        until, key = backend.deadline(), idempotency_key(request)
        names = {"firstname": body.firstname, "lastname": body.lastname}
        if await backend.call(rpc_, until, "otp", "is_authenticated", email=body.email):
            # One transaction for the student and the enrolment, keyed by e-mail and request key.
            student = await backend.call(rpc_, until, "student", "register", email=body.email, key=key, **names)
        else:
            # The marker is consumed by a successful register: the same request repeated (same
            # key) finds its own row and gets the same answer; anyone else is refused.
            student = await backend.call(rpc_, until, "student", "find", email=body.email, key=key)
            if state_of(student) != "created":
                return refusal("not_authenticated")
        state = state_of(student)
        if state != "created":
            return refusal(state)
        student_id = int(student["student_id"])
        await backend.call(rpc_, until, "otp", "consume_authenticated", email=body.email)
        # Keyed by id and e-mail: ids can repeat after a database restore, and a new student with an
        # old id must still get a mail.
        mail_key = f"student-{student_id}-{body.email}"
        await backend.call(rpc_, until, "email", "send", student_id=student_id, email=body.email, key=mail_key, **names)
        REGISTRATIONS.inc()
        return json_results(200, {"student_id": student_id})


def health_routes() -> APIRouter:
    """``/healthz``: no auth (a public path for the guard)."""
    health = APIRouter()

    @health.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "hostname": socket.gethostname()}

    return health
