"""The API gateway (FastAPI).

Routes (all POST, JSON in, ``{"results": ...}`` out, HTTP basic auth), each served both at
``/x`` and at ``/api/x`` (HAProxy forwards ``/api/...`` unchanged):

* ``/create_email_list``  ``{"email_list": [...]}``  -> ``{"results": {"added", "total", "rejected"}}``
  (the admin credential only)
* ``/getotp``  ``{"email"}``  -> ``{"results": "sent"}``; the OTP itself goes only by mail
* ``/authen``  ``{"email", "otp"}``  -> ``{"results": "ok", "proof": "..."}``
* ``/register``  ``{"firstname", "lastname", "email", "proof"}``  -> ``{"results": {"student_id": N}}``

Refusals carry a status code and a short machine-readable reason in ``results``: see
services/README.md. OpenAPI: ``/api/docs`` and ``/api/openapi.json``. ``/healthz`` has no auth.

Every request has one deadline (``REQUEST_DEADLINE``); its RPC calls are repeated within it (see
``registration.common.rpc.call_with_retry``). Every call is safe to repeat: it carries the
request's idempotency key (the ``Idempotency-Key`` header, or one made up per request).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from registration.api.auth import Roles, body_limit
from registration.api.backend import Backend
from registration.api.errors import add_error_handlers
from registration.api.routes import admin_routes, health_routes, user_routes
from registration.api.settings import ApiSettings
from registration.common.brokers import Brokers, PooledRpcClient
from registration.common.metrics import InstrumentedRpc
from registration.common.rpc import RpcCaller
from registration.common.settings import RabbitSettings
from registration.common.web import Guard

__all__ = ["ApiSettings", "create_app"]

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def rpc_connection(settings: ApiSettings, rpc: RpcCaller | None) -> Lifespan:
    """The app's lifespan: the RPC client to RabbitMQ in ``app.state.rpc`` (``rpc`` instead, in tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if rpc is not None:
            app.state.rpc = rpc
            yield
            return
        rabbit = RabbitSettings.from_env()
        client = PooledRpcClient(default_timeout=settings.rpc_timeout)
        # Every broker: each call goes through one of them, a repeated one through another.
        brokers = Brokers(rabbit, "api", on_added=client.add, on_removed=client.remove)
        await brokers.start()
        app.state.rpc = InstrumentedRpc(client)
        try:
            yield
        finally:
            await brokers.close()
            await client.close()

    return lifespan


DOCS_URL, OPENAPI_URL = "/api/docs", "/api/openapi.json"
SWAGGER_CDN = "https://cdn.jsdelivr.net"  # where FastAPI's Swagger UI page loads its script and style
SWAGGER_ICON = "https://fastapi.tiangolo.com"


def docs_page(title: str) -> HTMLResponse:
    """FastAPI's Swagger UI page, with a Content-Security-Policy of its own (HAProxy keeps it): its
    files from the CDN it names, and its one inline script by hash, nothing else inline."""
    page = get_swagger_ui_html(openapi_url=OPENAPI_URL, title=title)
    html = bytes(page.body).decode()
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    )
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {SWAGGER_CDN} {hashes}; style-src {SWAGGER_CDN}; "
        f"img-src 'self' data: {SWAGGER_ICON}; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return page


def create_app(settings: ApiSettings, rpc: RpcCaller | None = None) -> FastAPI:
    """Build the app. With ``rpc`` given (tests), no RabbitMQ connection is made."""
    app = FastAPI(
        title="Student registration API",
        version="1.1.0",
        docs_url=None,  # served below, with its own Content-Security-Policy
        openapi_url=OPENAPI_URL,
        redoc_url=None,
        lifespan=rpc_connection(settings, rpc),
    )

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return docs_page(f"{app.title} - Swagger UI")

    roles, backend = Roles(settings), Backend(settings)
    # Each route at /api/x (HAProxy forwards /api/... unchanged; in OpenAPI) and at /x.
    proof_key = settings.proof_key.get_secret_value().encode()
    for group in (admin_routes(backend, roles), user_routes(backend, roles, proof_key, settings.proof_ttl)):
        app.include_router(group, prefix="/api")
        app.include_router(group, include_in_schema=False)
    health = health_routes()
    app.include_router(health, prefix="/api", include_in_schema=False)
    app.include_router(health, include_in_schema=False)
    add_error_handlers(app)
    # Outermost: credentials and body size are settled before FastAPI reads a byte of the body.
    app.add_middleware(
        Guard,
        max_body=settings.max_body_bytes,
        limit_for=body_limit(settings),
        authorize=roles.authorize,
        trusted_proxies=settings.forwarded_allow_ips,
    )
    return app
