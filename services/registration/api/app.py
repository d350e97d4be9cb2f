"""The API gateway (FastAPI).

Routes (all POST, JSON in, ``{"results": ...}`` out, HTTP basic auth), each served both at
``/x`` and at ``/api/x`` (HAProxy forwards ``/api/...`` unchanged):

* ``/create_email_list``  ``{"email_list": [...]}``  -> ``{"results": {"added", "total", "rejected"}}``
* ``/getotp``  ``{"email"}``  -> ``{"results": "sent"}``; the OTP itself goes only by mail
* ``/authen``  ``{"email", "otp"}``  -> ``{"results": "ok"}``
* ``/register``  ``{"firstname", "lastname", "email"}``  -> ``{"results": {"student_id": N}}``

Refusals carry a status code and a short machine-readable reason in ``results``: see
services/README.md. OpenAPI: ``/api/docs`` and ``/api/openapi.json``. ``/healthz`` has no auth.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from registration.common.metrics import REGISTRATIONS, InstrumentedRpc
from registration.common.rpc import RpcCaller, RpcClient, RpcError, RpcTimeout, connect
from registration.common.settings import EnvSettings, Password, RabbitSettings, UserName

log = logging.getLogger(__name__)

EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
Email = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=254, pattern=EMAIL_PATTERN)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
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


# Module level on purpose: with postponed annotations FastAPI resolves Annotated[...] strings
# against the module's globals, not a closure's locals.
basic = HTTPBasic(realm="registration")


def get_rpc(request: Request) -> RpcCaller:
    caller: RpcCaller = request.app.state.rpc
    return caller


Rpc = Annotated[RpcCaller, Depends(get_rpc)]


def _results(status_code: int, results: Any) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"results": results})


# Business refusals -> HTTP status (body: {"results": "<reason>"}).
REFUSAL_STATUS: dict[str, int] = {
    "invalid_email": status.HTTP_422_UNPROCESSABLE_CONTENT,
    "unknown_email": status.HTTP_403_FORBIDDEN,
    "locked": status.HTTP_429_TOO_MANY_REQUESTS,
    "invalid_otp": status.HTTP_401_UNAUTHORIZED,
    "expired": status.HTTP_401_UNAUTHORIZED,
    "not_authenticated": status.HTTP_403_FORBIDDEN,
    "already_registered": status.HTTP_409_CONFLICT,
}


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
        client = RpcClient(connection, default_timeout=rabbit.rpc_timeout)
        await client.start()
        app.state.rpc = InstrumentedRpc(client)
        try:
            yield
        finally:
            await client.close()
            await connection.close()

    app = FastAPI(
        title="Student registration API",
        version="1.0.0",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    expected_user = settings.api_user.encode()

    def require_auth(creds: Annotated[HTTPBasicCredentials, Depends(basic)]) -> None:
        # Both comparisons always run, in constant time, whatever matches.
        user_ok = secrets.compare_digest(creds.username.encode(), expected_user)
        pass_ok = secrets.compare_digest(creds.password.encode(), settings.api_password.get_secret_value().encode())
        if not (user_ok and pass_ok):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="invalid credentials",
                headers={"WWW-Authenticate": 'Basic realm="registration"'},
            )

    async def call(rpc_: RpcCaller, service: str, method: str, **kwargs: Any) -> Any:
        try:
            return await rpc_.call(service, method, **kwargs)
        except RpcTimeout:
            log.warning("%s.%s timed out", service, method)
            raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, detail="backend_timeout") from None
        except RpcError as exc:
            log.warning("%s.%s failed: %s", service, method, exc)
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail="backend_error") from None

    router = APIRouter(dependencies=[Depends(require_auth)])

    @router.post("/create_email_list", response_model=Results)
    async def create_email_list(body: EmailListIn, rpc_: Rpc) -> JSONResponse:
        out = await call(rpc_, "otp", "create_email_list", email_list=list(body.email_list))
        return _results(200, out)

    @router.post("/getotp", response_model=Results)
    async def getotp(body: EmailIn, rpc_: Rpc) -> JSONResponse:
        created = await call(rpc_, "otp", "create", email=body.email)
        state = str(created.get("status")) if isinstance(created, dict) else "backend_error"
        if state != "created":
            return _results(REFUSAL_STATUS.get(state, 502), state)
        otp = created.get("otp")
        if not isinstance(otp, str):
            return _results(502, "backend_error")
        await call(rpc_, "email_otp", "send", otp=otp, email=body.email)
        del otp, created  # the code never goes into a response
        return _results(200, "sent")

    @router.post("/authen", response_model=Results)
    async def authen(body: AuthenIn, rpc_: Rpc) -> JSONResponse:
        out = await call(rpc_, "otp", "authen", email=body.email, otp=body.otp)
        state = str(out.get("status")) if isinstance(out, dict) else "backend_error"
        if state == "ok":
            return _results(200, "ok")
        return _results(REFUSAL_STATUS.get(state, 502), state)

    @router.post("/register", response_model=Results)
    async def register(body: RegisterIn, rpc_: Rpc) -> JSONResponse:
        if not await call(rpc_, "otp", "is_authenticated", email=body.email):
            return _results(REFUSAL_STATUS["not_authenticated"], "not_authenticated")
        student = await call(
            rpc_, "student", "insert", firstname=body.firstname, lastname=body.lastname, email=body.email
        )
        state = str(student.get("status")) if isinstance(student, dict) else "backend_error"
        if state != "created":
            return _results(REFUSAL_STATUS.get(state, 502), state)
        student_id = int(student["student_id"])
        # The marker is single-use: consumed once the student row exists.
        await call(rpc_, "otp", "consume_authenticated", email=body.email)
        await call(rpc_, "enroll", "insert", student_id=student_id, firstname=body.firstname, lastname=body.lastname)
        await call(
            rpc_,
            "email",
            "send",
            student_id=student_id,
            firstname=body.firstname,
            lastname=body.lastname,
            email=body.email,
        )
        REGISTRATIONS.inc()
        return _results(200, {"student_id": student_id})

    health = APIRouter()

    @health.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "hostname": socket.gethostname()}

    app.include_router(router, prefix="/api")
    app.include_router(router, include_in_schema=False)
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

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"results": exc.detail},
            headers=dict(exc.headers) if exc.headers else None,
        )

    return app
