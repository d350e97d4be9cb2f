"""The API gateway (FastAPI).

Routes (all POST, JSON in, ``{"results": ...}`` out, HTTP basic auth), each served both at
``/x`` and at ``/api/x`` (HAProxy forwards ``/api/...`` unchanged):

* ``/create_email_list``  ``{"email_list": [...]}``  -> ``{"results": {"added", "total", "rejected"}}``
  (the admin credential only)
* ``/getotp``  ``{"email"}``  -> ``{"results": "sent"}``; the OTP itself goes only by mail
* ``/authen``  ``{"email", "otp"}``  -> ``{"results": "ok"}``
* ``/register``  ``{"firstname", "lastname", "email"}``  -> ``{"results": {"student_id": N}}``

Refusals carry a status code and a short machine-readable reason in ``results``: see
services/README.md. OpenAPI: ``/api/docs`` and ``/api/openapi.json``. ``/healthz`` has no auth.

Every request has one deadline (``REQUEST_DEADLINE``); its RPC calls are repeated within it (see
``registration.common.rpc.call_with_retry``). Every call is safe to repeat: it carries the
request's idempotency key (the ``Idempotency-Key`` header, or one made up per request).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from registration.common.deadline import Deadline
from registration.common.emails import normalize_email
from registration.common.metrics import REGISTRATIONS, InstrumentedRpc
from registration.common.rpc import (
    RpcCaller,
    RpcClient,
    RpcError,
    RpcRemoteError,
    RpcTimeout,
    RpcUnavailable,
    call_with_retry,
    connect,
)
from registration.common.settings import (
    EnvSettings,
    Float,
    Int,
    OptionalPassword,
    Password,
    RabbitSettings,
    UserName,
)
from registration.common.text import clean_name
from registration.common.web import Denial, Guard

log = logging.getLogger(__name__)


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


class Results(BaseModel):
    results: Any


class ApiSettings(EnvSettings):
    api_user: UserName = Field("api", validation_alias="API_USER")
    api_password: Password = Field(validation_alias="API_PASSWORD")
    # The eligible list is the admin's: a credential of its own, which the UI never holds.
    # Without ADMIN_PASSWORD_FILE the admin routes refuse every caller.
    admin_user: UserName = Field("admin", validation_alias="ADMIN_USER")
    admin_password: OptionalPassword = Field(None, validation_alias="ADMIN_PASSWORD")
    request_deadline: Float = Field(40.0, validation_alias="REQUEST_DEADLINE")
    rpc_timeout: Float = Field(10.0, validation_alias="RPC_TIMEOUT")
    max_body_bytes: Int = Field(64 * 1024, validation_alias="MAX_BODY_BYTES")
    max_admin_body_bytes: Int = Field(4 * 1024 * 1024, validation_alias="MAX_ADMIN_BODY_BYTES")
    forwarded_allow_ips: str = Field("*", validation_alias="FORWARDED_ALLOW_IPS")


# Module level on purpose: with postponed annotations FastAPI resolves Annotated[...] strings
# against the module's globals, not a closure's locals. Documents the scheme in OpenAPI; the
# credentials themselves are checked by the guard before the body is read.
basic = HTTPBasic(realm="registration", auto_error=False)

PUBLIC_PATHS: Final = frozenset(
    {"/healthz", "/api/healthz", "/api/docs", "/api/openapi.json", "/api/docs/oauth2-redirect"}
)
ADMIN_PATHS: Final = frozenset({"/create_email_list", "/api/create_email_list"})
_KEY_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{16,128}$")
_CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="registration"'}


def get_rpc(request: Request) -> RpcCaller:
    caller: RpcCaller = request.app.state.rpc
    return caller


Rpc = Annotated[RpcCaller, Depends(get_rpc)]


def _results(status_code: int, results: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"results": results}, headers=dict(headers or {}))


# Business refusals -> HTTP status (body: {"results": "<reason>"}).
REFUSAL_STATUS: dict[str, int] = {
    "invalid_email": status.HTTP_422_UNPROCESSABLE_CONTENT,
    "unknown_email": status.HTTP_403_FORBIDDEN,
    "locked": status.HTTP_429_TOO_MANY_REQUESTS,
    "rate_limited": status.HTTP_429_TOO_MANY_REQUESTS,
    "invalid_otp": status.HTTP_401_UNAUTHORIZED,
    "expired": status.HTTP_401_UNAUTHORIZED,
    "not_authenticated": status.HTTP_403_FORBIDDEN,
    "already_registered": status.HTTP_409_CONFLICT,
}

# Starlette's and FastAPI's own HTTP errors -> a code like every other refusal (400: a body that
# is not even text, or JSON nested beyond the parser's recursion limit).
_HTTP_CODES: Final = {400: "invalid_request", 401: "invalid_credentials", 404: "not_found", 405: "method_not_allowed"}


def _decode_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def create_app(settings: ApiSettings, rpc: RpcCaller | None = None) -> FastAPI:
    """Build the app. With ``rpc`` given (tests), no RabbitMQ connection is made."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if rpc is not None:
            app.state.rpc = rpc
            yield
            return
        rabbit = RabbitSettings.from_env()
        connection = await connect(rabbit, "api")
        client = RpcClient(connection, default_timeout=settings.rpc_timeout)
        await client.start()
        app.state.rpc = InstrumentedRpc(client)
        try:
            yield
        finally:
            await client.close()
            await connection.close()

    app = FastAPI(
        title="Student registration API",
        version="1.1.0",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )

    roles: list[tuple[str, bytes, bytes]] = [
        ("api", settings.api_user.encode(), settings.api_password.get_secret_value().encode())
    ]
    if settings.admin_password is not None:
        roles.append(("admin", settings.admin_user.encode(), settings.admin_password.get_secret_value().encode()))

    def role_of(header: str | None) -> str | None:
        creds = _decode_basic(header)
        if creds is None:
            return None
        found = None
        for role, user, password in roles:
            # Every comparison runs, in constant time, whatever matches.
            user_ok = secrets.compare_digest(creds[0], user)
            pass_ok = secrets.compare_digest(creds[1], password)
            if user_ok and pass_ok:
                found = role
        return found

    def authorize(path: str, headers: Mapping[str, str]) -> Denial | None:
        if path in PUBLIC_PATHS:
            return None
        role = role_of(headers.get("authorization"))
        if role is None:
            return 401, "invalid_credentials", _CHALLENGE
        needed = "admin" if path in ADMIN_PATHS else "api"
        if role != needed:
            return 403, "forbidden", {}
        return None

    def limit_for(path: str) -> int:
        # Only an authenticated admin gets here with a large body (the guard checked first).
        return settings.max_admin_body_bytes if path in ADMIN_PATHS else settings.max_body_bytes

    def require(role: str) -> Any:
        def check(request: Request, _: Annotated[Any, Depends(basic)]) -> None:
            # Defence in depth: the guard has already refused anyone else.
            if role_of(request.headers.get("authorization")) != role:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid_credentials", headers=_CHALLENGE)

        return Depends(check)

    def deadline() -> Deadline:
        return Deadline(settings.request_deadline)

    def idempotency_key(request: Request) -> str:
        given = request.headers.get("idempotency-key")
        if given is None:
            return uuid.uuid4().hex  # a key of our own: retries of this request only
        if not _KEY_RE.fullmatch(given):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid_idempotency_key")
        return given

    async def call(rpc_: RpcCaller, until: Deadline, service: str, method: str, **kwargs: Any) -> Any:
        try:
            return await call_with_retry(
                rpc_, service, method, deadline=until, attempt_timeout=settings.rpc_timeout, safe=True, **kwargs
            )
        except RpcTimeout:
            log.warning("%s.%s timed out", service, method)
            raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, "backend_timeout") from None
        except RpcUnavailable:
            log.warning("%s.%s: backend unavailable until the deadline", service, method)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "backend_unavailable", {"Retry-After": "5"}
            ) from None
        except RpcRemoteError as exc:
            if exc.transient:
                log.warning("%s.%s: a dependency stayed unavailable until the deadline", service, method)
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE, "backend_unavailable", {"Retry-After": "5"}
                ) from None
            log.warning("%s.%s failed: %s", service, method, exc)
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, "backend_error") from None
        except RpcError as exc:
            log.warning("%s.%s failed: %s", service, method, exc)
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, "backend_error") from None

    def state_of(reply: Any) -> str:
        return str(reply.get("status")) if isinstance(reply, dict) else "backend_error"

    def refusal(state: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return _results(REFUSAL_STATUS.get(state, status.HTTP_502_BAD_GATEWAY), state, headers)

    admin = APIRouter(dependencies=[require("admin")])
    router = APIRouter(dependencies=[require("api")])

    @admin.post("/create_email_list", response_model=Results)
    async def create_email_list(body: EmailListIn, rpc_: Rpc) -> JSONResponse:
        out = await call(rpc_, deadline(), "otp", "create_email_list", email_list=list(body.email_list))
        return _results(200, out)

    @router.post("/getotp", response_model=Results)
    async def getotp(body: EmailIn, request: Request, rpc_: Rpc) -> JSONResponse:
        until, key = deadline(), idempotency_key(request)
        client = str(getattr(request.state, "client", ""))
        created = await call(rpc_, until, "otp", "create", email=body.email, client=client, key=key)
        state = state_of(created)
        if state == "already_sent":  # repeated within the resend window: no second mail
            return _results(200, "sent")
        if state == "rate_limited":
            retry_after = int(created.get("retry_after") or 60)
            return refusal(state, {"Retry-After": str(max(1, retry_after))})
        if state != "created":
            return refusal(state)
        otp = created.get("otp")
        if not isinstance(otp, str):
            return _results(502, "backend_error")
        del created  # the code never goes into a response
        try:
            await call(rpc_, until, "email_otp", "send", otp=otp, email=body.email, key=key)
        except HTTPException:
            # No mail went out: let the next request issue a code at once (best effort).
            with suppress(RpcError):
                await rpc_.call("otp", "release_sent", timeout=1.0, email=body.email, key=key)
            raise
        return _results(200, "sent")

    @router.post("/authen", response_model=Results)
    async def authen(body: AuthenIn, request: Request, rpc_: Rpc) -> JSONResponse:
        until, key = deadline(), idempotency_key(request)
        out = await call(rpc_, until, "otp", "authen", email=body.email, otp=body.otp, key=key)
        state = state_of(out)
        if state == "ok":
            return _results(200, "ok")
        return refusal(state)

    @router.post("/register", response_model=Results)
    async def register(body: RegisterIn, request: Request, rpc_: Rpc) -> JSONResponse:
        until, key = deadline(), idempotency_key(request)
        names = {"firstname": body.firstname, "lastname": body.lastname}
        if await call(rpc_, until, "otp", "is_authenticated", email=body.email):
            # One transaction for the student and the enrolment, keyed by e-mail and request key.
            student = await call(rpc_, until, "student", "register", email=body.email, key=key, **names)
        else:
            # The marker is consumed by a successful register: the same request repeated (same
            # key) finds its own row and gets the same answer; anyone else is refused.
            student = await call(rpc_, until, "student", "find", email=body.email, key=key)
            if state_of(student) != "created":
                return refusal("not_authenticated")
        state = state_of(student)
        if state != "created":
            return refusal(state)
        student_id = int(student["student_id"])
        await call(rpc_, until, "otp", "consume_authenticated", email=body.email)
        # Keyed by id and e-mail: ids can repeat after a database restore, and a new student with an
        # old id must still get a mail.
        mail_key = f"student-{student_id}-{body.email}"
        await call(rpc_, until, "email", "send", student_id=student_id, email=body.email, key=mail_key, **names)
        REGISTRATIONS.inc()
        return _results(200, {"student_id": student_id})

    health = APIRouter()

    @health.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "hostname": socket.gethostname()}

    for group in (admin, router):
        app.include_router(group, prefix="/api")
        app.include_router(group, include_in_schema=False)
    app.include_router(health, prefix="/api", include_in_schema=False)
    app.include_router(health, include_in_schema=False)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the submitted values back (they may hold an OTP or a password attempt).
        errors = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
            for err in exc.errors()
        ]
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"results": "invalid_request", "detail": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.detail if isinstance(exc, HTTPException) else _HTTP_CODES.get(exc.status_code, "error")
        if not isinstance(code, str) or " " in code:
            code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(
            status_code=exc.status_code,
            content={"results": code},
            headers=dict(exc.headers) if exc.headers else None,
        )

    # Outermost: credentials and body size are settled before FastAPI reads a byte of the body.
    app.add_middleware(
        Guard,
        max_body=settings.max_body_bytes,
        limit_for=limit_for,
        authorize=authorize,
        trusted_proxies=settings.forwarded_allow_ips,
    )
    return app
