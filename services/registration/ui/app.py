"""The registration UI (FastAPI + Jinja2), three pages as in the original Flask UI.

``/`` asks for the e-mail and requests an OTP, ``/authen`` checks the OTP, ``/reg`` takes the
first and last name and registers. Every page shows the serving container's hostname.

The session id changes when an OTP is requested and when it is verified (against session
fixation). A session is stored only once an OTP was requested from a posted form; before that, the
forms carry a CSRF token signed for the cookie's id. Each form submission carries an idempotency key to the API, so the UI can repeat a
call whose answer was lost (an API task replaced mid-request) without a double effect.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Request, Response
from pydantic import AfterValidator, Field

from registration.common.settings import Bool, EnvSettings, Float, Int, Password, UserName
from registration.common.web import Guard
from registration.ui.api_client import ApiPost, http_api_post
from registration.ui.pages import Pages, add_error_pages
from registration.ui.routes import (
    add_health,
    add_otp_check_pages,
    add_otp_request_pages,
    add_registration_pages,
    add_style,
)
from registration.ui.session_cookie import SessionCookie
from registration.ui.sessions import OUTAGE_BUDGET, KeyValue, SessionStore

__all__ = ["UiSettings", "create_app"]

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _without_trailing_slash(url: str) -> str:
    return url.rstrip("/")


class UiSettings(EnvSettings):
    api_url: Annotated[str, AfterValidator(_without_trailing_slash)] = Field(
        "http://api:8000", validation_alias="API_URL"
    )
    api_user: UserName = Field("api", validation_alias="API_USER")
    api_password: Password = Field(validation_alias="API_PASSWORD")
    # Signs the forms' CSRF tokens (and names sessions to the API), the same in every UI replica.
    csrf_key: Password = Field(validation_alias="CSRF_KEY")
    session_ttl: Int = Field(1800, validation_alias="SESSION_TTL")
    # How long a page waits for the session store while Swarm moves it (stop-first: the old task stops,
    # the new one starts). The stack sets the API's REQUEST_DEADLINE, so the UI rides out a move as long
    # as the API rides out its own (20 s was short: 27 s measured for a move on a loaded lab).
    session_outage_budget: Float = Field(OUTAGE_BUDGET, validation_alias="SESSION_OUTAGE_BUDGET")
    cookie_secure: Bool = Field(False, validation_alias="SESSION_COOKIE_SECURE")
    # The whole budget of one API call, retries included; above the API's own REQUEST_DEADLINE
    # (60 s) so that the API's clear answer arrives before the UI gives up.
    api_timeout: Float = Field(65.0, validation_alias="API_TIMEOUT")
    max_body_bytes: Int = Field(64 * 1024, validation_alias="MAX_BODY_BYTES")
    forwarded_allow_ips: str = Field("*", validation_alias="FORWARDED_ALLOW_IPS")


def _text_error(status: int, code: str) -> tuple[bytes, str]:
    text = "Request too large." if code == "body_too_large" else "Bad request."
    return text.encode(), "text/plain; charset=utf-8"


def connections(settings: UiSettings, kv_factory: Callable[[], KeyValue], api_post: ApiPost | None) -> Lifespan:
    """The app's lifespan: the session store in ``app.state.sessions``, the API client in
    ``app.state.api_post`` (``api_post`` instead, in tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.sessions = SessionStore(kv_factory(), settings.session_ttl, settings.session_outage_budget)
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

    return lifespan


def add_served_by(app: FastAPI, hostname: str) -> None:
    @app.middleware("http")
    async def served_by(request: Request, call_next: Any) -> Response:
        # Lets a person (or a test) see which container answered, as the seed's page did.
        response: Response = await call_next(request)
        response.headers["X-Served-By"] = hostname
        return response


def create_app(
    settings: UiSettings,
    kv_factory: Callable[[], KeyValue],
    api_post: ApiPost | None = None,
) -> FastAPI:
    """``kv_factory`` builds the session key-value store (Redis, or a fake in tests);
    ``api_post`` replaces the HTTP client to the API gateway in tests."""
    app = FastAPI(
        title="Student registration",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=connections(settings, kv_factory, api_post),
    )
    hostname = socket.gethostname()
    add_served_by(app, hostname)
    csrf_key = settings.csrf_key.get_secret_value().encode()
    pages, cookie = Pages(hostname), SessionCookie(settings.session_ttl, settings.cookie_secure, csrf_key)
    add_error_pages(app, pages)
    add_otp_request_pages(app, pages, cookie)
    add_otp_check_pages(app, pages, cookie)
    add_registration_pages(app, pages, cookie)
    add_health(app, hostname)
    add_style(app)
    # Outermost: the body is bounded before a form parser sees it; records the client address.
    app.add_middleware(
        Guard,
        max_body=settings.max_body_bytes,
        trusted_proxies=settings.forwarded_allow_ips,
        error_body=_text_error,
    )
    return app
