"""The registration UI (FastAPI + Jinja2), three pages as in the original Flask UI.

``/`` asks for the e-mail and requests an OTP, ``/authen`` checks the OTP, ``/reg`` takes the
first and last name and registers. Every page shows the serving container's hostname.

The session id changes when an OTP is requested and when it is verified (against session
fixation). Each form submission carries an idempotency key to the API, so the UI can repeat a
call whose answer was lost (an API task replaced mid-request) without a double effect.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import AfterValidator, Field

from registration.common.deadline import Deadline, backoff_delays, retry_until
from registration.common.emails import InvalidEmail, normalize_email
from registration.common.settings import Bool, EnvSettings, Float, Int, Password, UserName
from registration.common.text import clean_name
from registration.common.web import Guard
from registration.ui.sessions import SESSION_COOKIE, KeyValue, SessionsAway, SessionStore, new_session_id

log = logging.getLogger(__name__)

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

MESSAGES = {
    "unknown_email": "This e-mail is not on the list of admitted students.",
    "invalid_email": "Please enter a valid e-mail address.",
    "locked": "Too many wrong attempts. This e-mail is locked for a while; try again later.",
    "rate_limited": "Too many requests for a one-time password. Please wait a few minutes and try again.",
    "invalid_otp": "Wrong OTP. Please try again.",
    "expired": "Your OTP has expired or was already used. Please request a new one.",
    "not_authenticated": "Please verify your e-mail with an OTP first.",
    "already_registered": "This e-mail is already registered.",
    "backend_timeout": "The service is busy. Please try again in a moment.",
    "backend_unavailable": "The service is unavailable. Please try again in a moment.",
    "backend_error": "The service is unavailable. Please try again in a moment.",
    "invalid_request": "Please check the form and try again.",
}

# API answers passed on as the page's status; any other refusal is a 400 (the form is wrong).
_PASSED_ON = frozenset({429, 502, 503, 504})


def _without_trailing_slash(url: str) -> str:
    return url.rstrip("/")


class UiSettings(EnvSettings):
    api_url: Annotated[str, AfterValidator(_without_trailing_slash)] = Field(
        "http://api:8000", validation_alias="API_URL"
    )
    api_user: UserName = Field("api", validation_alias="API_USER")
    api_password: Password = Field(validation_alias="API_PASSWORD")
    session_ttl: Int = Field(1800, validation_alias="SESSION_TTL")
    cookie_secure: Bool = Field(False, validation_alias="SESSION_COOKIE_SECURE")
    # The whole budget of one API call, retries included; above the API's own REQUEST_DEADLINE
    # (40 s) so that the API's clear answer arrives before the UI gives up.
    api_timeout: Float = Field(45.0, validation_alias="API_TIMEOUT")
    max_body_bytes: Int = Field(64 * 1024, validation_alias="MAX_BODY_BYTES")
    forwarded_allow_ips: str = Field("*", validation_alias="FORWARDED_ALLOW_IPS")


@dataclass(frozen=True)
class ApiContext:
    """What goes with a call besides the body: the end user's address (for the API's rate limits)
    and the submission's idempotency key."""

    client: str
    key: str


ApiPost = Callable[[str, dict[str, Any], ApiContext], Awaitable[tuple[int, Any]]]


def _text_error(status: int, code: str) -> tuple[bytes, str]:
    text = "Request too large." if code == "body_too_large" else "Bad request."
    return text.encode(), "text/plain; charset=utf-8"


def http_api_post(client: httpx.AsyncClient, budget: float) -> ApiPost:
    """POST to the API, repeating transport failures (with the same idempotency key) within ``budget``."""

    async def post(path: str, payload: dict[str, Any], ctx: ApiContext) -> tuple[int, Any]:
        deadline = Deadline(budget)
        headers = {"Idempotency-Key": ctx.key}
        if ctx.client:
            headers["X-Forwarded-For"] = ctx.client

        async def send() -> httpx.Response:
            return await client.post(path, json=payload, headers=headers, timeout=max(0.1, deadline.remaining()))

        def retrying(error: BaseException, attempt: int, pause: float) -> None:
            log.info("API call %s failed (%s); retrying", path, type(error).__name__)

        try:
            resp = await retry_until(
                deadline,
                send,
                transient=(httpx.HTTPError,),
                what=f"API call {path}",
                delay=backoff_delays(),  # full jitter, 0.25 s doubling to 4 s
                reserve=0.1,
                on_retry=retrying,
                reraise=True,
            )
        except httpx.HTTPError as exc:
            log.warning("API call %s failed: %s", path, type(exc).__name__)
            return 503, "backend_unavailable"
        try:
            return resp.status_code, resp.json().get("results")
        except (ValueError, AttributeError):
            return resp.status_code, "backend_error"

    return post


def create_app(
    settings: UiSettings,
    kv_factory: Callable[[], KeyValue],
    api_post: ApiPost | None = None,
) -> FastAPI:
    """``kv_factory`` builds the session key-value store (Redis, or a fake in tests);
    ``api_post`` replaces the HTTP client to the API gateway in tests."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.sessions = SessionStore(kv_factory(), settings.session_ttl)
        if api_post is not None:
            app.state.api_post = api_post
            yield
            return
        async with httpx.AsyncClient(
            base_url=settings.api_url,
            auth=(settings.api_user, settings.api_password.get_secret_value()),
            timeout=settings.api_timeout,
        ) as client:
            app.state.api_post = http_api_post(client, settings.api_timeout)
            yield

    app = FastAPI(title="Student registration", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    hostname = socket.gethostname()

    @app.middleware("http")
    async def served_by(request: Request, call_next: Any) -> Response:
        # Lets a person (or a test) see which container answered, as the seed's page did.
        response: Response = await call_next(request)
        response.headers["X-Served-By"] = hostname
        return response

    async def session_of(request: Request) -> tuple[str, dict[str, Any]]:
        store: SessionStore = request.app.state.sessions
        sid = request.cookies.get(SESSION_COOKIE)
        data = await store.load(sid)
        if not data or sid is None:
            sid = new_session_id()  # never adopt an id the browser made up
            data = {"csrf": secrets.token_urlsafe(24)}
        return sid, data

    async def rotate(request: Request, sid: str, data: dict[str, Any]) -> str:
        store: SessionStore = request.app.state.sessions
        data["csrf"] = secrets.token_urlsafe(24)
        return await store.rotate(sid)

    async def commit(request: Request, response: Response, sid: str, data: dict[str, Any]) -> Response:
        store: SessionStore = request.app.state.sessions
        await store.save(sid, data)
        response.set_cookie(
            SESSION_COOKIE,
            sid,
            max_age=settings.session_ttl,
            httponly=True,
            secure=settings.cookie_secure,
            samesite="lax",
            path="/",
        )
        return response

    def page(request: Request, template: str, data: dict[str, Any], status_code: int = 200, **ctx: Any) -> Response:
        context = {"hostname": hostname, "csrf": data.get("csrf", ""), "email": data.get("email"), **ctx}
        return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)

    def error_page(request: Request, template: str, data: dict[str, Any], status_code: int, code: Any) -> Response:
        # The page says it in words; the header says it in the API's code (for tests and logs).
        known = str(code) if str(code) in MESSAGES else "backend_error"
        words = {"text" if template == "message.html" else "error": MESSAGES[known]}
        response = page(request, template, data, status_code, **words)
        response.headers["X-Error-Code"] = known
        return response

    def csrf_ok(data: dict[str, Any], token: str) -> bool:
        expected = str(data.get("csrf", ""))
        return bool(expected) and secrets.compare_digest(expected.encode(), token.encode())

    def bad_form(request: Request, template: str, data: dict[str, Any], code: str = "invalid_request") -> Response:
        return error_page(request, template, data, 400, code)

    def refused(status_code: int) -> int:
        return status_code if status_code in _PASSED_ON else 400

    async def api(request: Request, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        ctx = ApiContext(client=str(getattr(request.state, "client", "")), key=secrets.token_urlsafe(24))
        result: tuple[int, Any] = await request.app.state.api_post(path, payload, ctx)
        return result

    @app.exception_handler(SessionsAway)
    async def sessions_away(request: Request, exc: SessionsAway) -> Response:
        # The session store stayed away past its outage budget: say so (503), never a 500.
        response = error_page(request, "message.html", {}, 503, "backend_unavailable")
        response.headers["Retry-After"] = "5"
        return response

    @app.get("/", response_class=HTMLResponse)
    async def otp_form(request: Request) -> Response:
        sid, data = await session_of(request)
        return await commit(request, page(request, "otp.html", data), sid, data)

    @app.post("/", response_class=HTMLResponse)
    async def otp_submit(request: Request, email: str = Form(""), csrf: str = Form("")) -> Response:
        sid, data = await session_of(request)
        if not csrf_ok(data, csrf):
            return await commit(request, bad_form(request, "otp.html", data), sid, data)
        try:
            address = normalize_email(email)
        except InvalidEmail:
            return await commit(request, bad_form(request, "otp.html", data, "invalid_email"), sid, data)
        status_code, results = await api(request, "/getotp", {"email": address})
        if status_code == 200 and results == "sent":
            data.update({"email": address, "authen": False})
            sid = await rotate(request, sid, data)
            return await commit(request, RedirectResponse("authen", status_code=303), sid, data)
        return await commit(request, error_page(request, "otp.html", data, refused(status_code), results), sid, data)

    @app.get("/authen", response_class=HTMLResponse)
    async def authen_form(request: Request) -> Response:
        sid, data = await session_of(request)
        if not data.get("email"):
            return await commit(request, RedirectResponse("./", status_code=303), sid, data)
        return await commit(request, page(request, "authen.html", data), sid, data)

    @app.post("/authen", response_class=HTMLResponse)
    async def authen_submit(request: Request, otp: str = Form(""), csrf: str = Form("")) -> Response:
        sid, data = await session_of(request)
        if not data.get("email"):
            return await commit(request, RedirectResponse("./", status_code=303), sid, data)
        if not csrf_ok(data, csrf):
            return await commit(request, bad_form(request, "authen.html", data), sid, data)
        code = otp.strip()
        if not (len(code) == 6 and code.isascii() and code.isdigit()):
            return await commit(request, bad_form(request, "authen.html", data, "invalid_otp"), sid, data)
        status_code, results = await api(request, "/authen", {"email": data["email"], "otp": code})
        if status_code == 200 and results == "ok":
            data["authen"] = True
            sid = await rotate(request, sid, data)
            return await commit(request, RedirectResponse("reg", status_code=303), sid, data)
        return await commit(request, error_page(request, "authen.html", data, refused(status_code), results), sid, data)

    @app.get("/reg", response_class=HTMLResponse)
    async def reg_form(request: Request) -> Response:
        sid, data = await session_of(request)
        if not data.get("authen"):
            return await commit(request, error_page(request, "message.html", data, 403, "not_authenticated"), sid, data)
        return await commit(request, page(request, "reg.html", data), sid, data)

    @app.post("/reg", response_class=HTMLResponse)
    async def reg_submit(
        request: Request, firstname: str = Form(""), lastname: str = Form(""), csrf: str = Form("")
    ) -> Response:
        sid, data = await session_of(request)
        if not data.get("authen"):
            return await commit(request, error_page(request, "message.html", data, 403, "not_authenticated"), sid, data)
        if not csrf_ok(data, csrf):
            return await commit(request, bad_form(request, "reg.html", data), sid, data)
        try:
            first, last = clean_name(firstname), clean_name(lastname)
        except ValueError:
            return await commit(request, bad_form(request, "reg.html", data), sid, data)
        status_code, results = await api(
            request, "/register", {"firstname": first, "lastname": last, "email": data["email"]}
        )
        if status_code == 200 and isinstance(results, dict) and "student_id" in results:
            store: SessionStore = request.app.state.sessions
            await store.delete(sid)
            resp = page(
                request,
                "message.html",
                {},
                text=f"Registration complete. Your student ID is {int(results['student_id'])}. "
                "A confirmation has been sent by e-mail.",
            )
            resp.delete_cookie(SESSION_COOKIE, path="/")
            return resp
        return await commit(request, error_page(request, "reg.html", data, refused(status_code), results), sid, data)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "hostname": hostname}

    # Outermost: the body is bounded before a form parser sees it; records the client address.
    app.add_middleware(
        Guard,
        max_body=settings.max_body_bytes,
        trusted_proxies=settings.forwarded_allow_ips,
        error_body=_text_error,
    )
    return app
