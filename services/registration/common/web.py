"""Serving a FastAPI app the same way in every HTTP service (behind HAProxy, graceful on SIGTERM),
and the request guard every app puts in front of its routes.

Graceful on SIGTERM means drain first: for ``DRAIN_SECONDS`` the app keeps serving but its
``/healthz`` answers 404, which HAProxy (``http-check disable-on-404``) takes as "send nothing new
here" while what is in flight goes on; only then does uvicorn stop listening and finish the requests
in flight. Without the drain, a request HAProxy sent on an idle connection that uvicorn was closing
came back as a 502.

The guard (:class:`Guard`, a plain ASGI middleware, so it runs before FastAPI reads anything):

* decides who may call a path from the headers alone and refuses before the body is read (a
  50 MB unauthenticated upload costs one header check; the body is never received);
* refuses bodies over a limit, by ``Content-Length`` at once and by counting while reading a
  body without one, so no more than the limit is ever buffered;
* records the client's address for the rate limits (:func:`client_address`).
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, Final

import uvicorn
from pydantic import Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registration.common.metrics import instrument_app
from registration.common.settings import EnvSettings, Float, OptionalInt

DEFAULT_MAX_BODY: Final = 64 * 1024
_MAX_ADDRESS_LEN: Final = 64


class ServeSettings(EnvSettings):
    host: str = Field("0.0.0.0", validation_alias="HOST")
    port: OptionalInt = Field(None, validation_alias="PORT")  # None: the service's own default port
    forwarded_allow_ips: str = Field("*", validation_alias="FORWARDED_ALLOW_IPS")
    # On SIGTERM, requests in flight may finish for this long: set it above REQUEST_DEADLINE so a
    # request riding out a database move is not cut when its API task is replaced too.
    shutdown_grace: Float = Field(10.0, validation_alias="SHUTDOWN_GRACE")
    # Above two of HAProxy's health checks (inter 1s): it has seen the 404 before uvicorn stops.
    drain_seconds: Float = Field(3.0, validation_alias="DRAIN_SECONDS")


# Above every HAProxy timeout (`timeout client 80s`, `timeout server 75s`): see uvicorn_config.
KEEP_ALIVE_SECONDS: Final = 90
DRAINING = threading.Event()
DRAINING_BODY: Final = b'{"status":"draining"}'


class Draining:
    """ASGI middleware: counts the requests in flight and, while the process drains, answers 404
    on every ``.../healthz``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if DRAINING.is_set() and str(scope.get("path", "")).endswith("/healthz"):
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(DRAINING_BODY)).encode())]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": DRAINING_BODY})
            return
        self.in_flight += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class DrainFirstServer(uvicorn.Server):
    """uvicorn, with its first SIGTERM or SIGINT turned into a drain before the usual graceful
    shutdown: `drain_seconds` of 404 health answers (HAProxy stops sending), then until no request
    is in flight (at most `grace` more seconds). uvicorn closes its port only then: HAProxy marks a
    closed port down and cuts the sessions still open to it (`on-marked-down shutdown-sessions`).
    A second signal shuts down at once."""

    def __init__(self, config: uvicorn.Config, app: Draining, drain_seconds: float, grace: float) -> None:
        super().__init__(config)
        self.drained_app, self.drain_seconds, self.grace = app, drain_seconds, grace

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if DRAINING.is_set() or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        DRAINING.set()
        threading.Thread(target=self._drain_then_exit, args=(sig, frame), daemon=True).start()

    def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        time.sleep(self.drain_seconds)
        deadline = time.monotonic() + self.grace
        while self.drained_app.in_flight and time.monotonic() < deadline:
            time.sleep(0.1)
        super().handle_exit(sig, frame)


def serve(app: Any, default_port: int = 8000) -> None:
    settings = ServeSettings.from_env()
    instrument_app(app)  # Prometheus metrics on their own port
    draining = Draining(app)
    config = uvicorn_config(draining, settings, default_port)
    DrainFirstServer(config, draining, settings.drain_seconds, settings.shutdown_grace).run()


def uvicorn_config(draining: Draining, settings: ServeSettings, default_port: int) -> uvicorn.Config:
    return uvicorn.Config(
        draining,
        host=settings.host,
        port=default_port if settings.port is None else settings.port,
        log_config=None,
        # uvicorn's own X-Forwarded-For handling would take the left-most entry, which the client
        # writes itself; the apps resolve the address with client_address() instead.
        proxy_headers=False,
        # No `Server: uvicorn` (HAProxy strips it too: this covers a worker's port reached directly).
        server_header=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
        # HAProxy keeps idle connections to the services and reuses them; with uvicorn's default (5 s)
        # uvicorn may close one just as HAProxy sends a request on it. A POST is not retried then, and
        # the client's kept-alive connection is closed without an answer. The idle side that closes
        # must be HAProxy's: keep them open longer than it does (ray-project/ray#54127, kserve#5446).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


def _parse_ip(text: str) -> str | None:
    value = text.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _trusted(peer: str, trusted: str) -> bool:
    entries = [t.strip() for t in trusted.split(",") if t.strip()]
    if "*" in entries:
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for entry in entries:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(peer: str | None, forwarded_for: list[str], trusted: str) -> str:
    """The client's address: X-Forwarded-For only from a trusted hop (``FORWARDED_ALLOW_IPS``).

    HAProxy (``option forwardfor``) appends the address it saw, so its entry is the right-most:
    entries to its left were written by the client and are never believed. From trusted hops we
    walk from the right past the trusted ones; with ``*`` only the right-most entry counts.
    """
    own = _parse_ip(peer) if peer else None
    if own is None or not forwarded_for or not _trusted(own, trusted):
        return own or ""
    hops = [h for h in ",".join(forwarded_for).split(",") if h.strip()]
    everyone = trusted.strip() == "*" or "*" in [t.strip() for t in trusted.split(",")]
    for hop in reversed(hops):
        address = _parse_ip(hop)
        if address is None:
            return own  # a malformed entry: believe only what we saw ourselves
        if everyone or not _trusted(address, trusted):
            return address
    return own


# (status, error code, extra headers) or None to let the request through.
Denial = tuple[int, str, Mapping[str, str]]
Authorize = Callable[[str, Mapping[str, str]], Denial | None]
ErrorBody = Callable[[int, str], tuple[bytes, str]]


def json_error(status: int, code: str) -> tuple[bytes, str]:
    return json.dumps({"results": code}).encode(), "application/json"


class Guard:
    """ASGI middleware: credentials before the body, a bounded body, the client's address."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        limit_for: Callable[[str], int] | None = None,
        authorize: Authorize | None = None,
        trusted_proxies: str = "*",
        error_body: ErrorBody = json_error,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.limit_for = limit_for
        self.authorize = authorize
        self.trusted_proxies = trusted_proxies
        self.error_body = error_body

    async def _refuse(self, send: Send, status: int, code: str, headers: Mapping[str, str] | None = None) -> None:
        body, content_type = self.error_body(status, code)
        raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        # The body (if any) is left unread: tell the client this connection is done.
        raw.append((b"connection", b"close"))
        raw.append((b"x-error-code", code.encode()))
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        forwarded: list[str] = []
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name == "x-forwarded-for":
                forwarded.append(value)
            headers[name] = value
        peer = scope.get("client")
        address = client_address(peer[0] if peer else None, forwarded, self.trusted_proxies)
        scope.setdefault("state", {})["client"] = address[:_MAX_ADDRESS_LEN]

        path: str = scope.get("path", "")
        if self.authorize is not None:
            denial = self.authorize(path, headers)
            if denial is not None:
                await self._refuse(send, *denial)
                return

        limit = self.limit_for(path) if self.limit_for is not None else self.max_body
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(send, 400, "invalid_request")
                return
            if int(declared) > limit:
                await self._refuse(send, 413, "body_too_large")
                return

        # Read the (bounded) body here, so nothing downstream ever holds more than the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, 413, "body_too_large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)
