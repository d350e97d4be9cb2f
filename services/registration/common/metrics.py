"""Prometheus metrics of the registration services, with the maintained client (prometheus_client).

Every Python service serves them on its own port (``METRICS_PORT``, default 9464; 0 turns it off),
apart from its application port, so HAProxy never routes them: the stack's Prometheus scrapes them
over the ``metrics`` overlay network, finding the tasks through Swarm's DNS (``tasks.<service>``),
and labels each series with the service's name.

What is exported (besides prometheus_client's process and Python collectors):

* HTTP services (ui, api, mailsink): ``http_requests_total{method, route, status}`` and
  ``http_request_duration_seconds{method, route}``; ``route`` is the route's template
  (``/api/register``), ``unmatched`` for paths no route serves, so labels stay few.
* RPC workers (otp, student, enroll, email, email_otp): ``rpc_server_requests_total{method, outcome}``
  and ``rpc_server_request_duration_seconds{method}``; outcome ``ok`` or ``error`` (the handler raised).
* RPC callers (api): ``rpc_client_calls_total{service, method, outcome}`` and
  ``rpc_client_call_duration_seconds{service, method}``; outcome ``ok``, ``timeout`` or ``error``.
* The business: ``otp_mails_sent_total`` (email_otp, per OTP mail handed to SMTP) and
  ``registrations_total`` (api, per student registered).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import Counter, Histogram, start_http_server
from pydantic import Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registration.common.rpc import RpcCaller, RpcTimeout
from registration.common.settings import EnvSettings, Int

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464
UNMATCHED = "unmatched"

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests served", ["method", "route", "status"])
HTTP_DURATION = Histogram("http_request_duration_seconds", "Time to serve an HTTP request", ["method", "route"])
RPC_SERVED = Counter("rpc_server_requests_total", "RPC requests handled by this worker", ["method", "outcome"])
RPC_SERVED_DURATION = Histogram("rpc_server_request_duration_seconds", "Time to handle an RPC request", ["method"])
RPC_CALLS = Counter("rpc_client_calls_total", "RPC calls made to the workers", ["service", "method", "outcome"])
RPC_CALL_DURATION = Histogram(
    "rpc_client_call_duration_seconds", "Time from an RPC call to its reply", ["service", "method"]
)
OTP_MAILS_SENT = Counter("otp_mails_sent_total", "OTP mails handed to the SMTP server")
REGISTRATIONS = Counter("registrations_total", "Students registered")


class MetricsSettings(EnvSettings):
    port: Int = Field(DEFAULT_PORT, validation_alias="METRICS_PORT")


_started = threading.Event()


def start_metrics_server() -> int | None:
    """Serve /metrics on METRICS_PORT (once per process, in a thread); returns the port, None if off."""
    port = MetricsSettings.from_env().port
    if port == 0 or _started.is_set():
        return None if port == 0 else port
    start_http_server(port)
    _started.set()
    log.info("metrics on :%s/metrics", port)
    return port


def _route(scope: Scope) -> str:
    # The router stores the matched route in the (shared) scope: its template keeps labels few.
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpMetrics:
    """ASGI middleware counting and timing every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is a server error

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            method, route = str(scope.get("method", "")), _route(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


def instrument_app(app: Any) -> None:
    """What an HTTP service needs: the middleware on its app and the metrics server."""
    app.add_middleware(HttpMetrics)
    start_metrics_server()


Handler = Callable[..., Awaitable[Any]]


def instrument_handlers(handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    """Each RPC handler counted and timed; a handler that raises counts as an error (and still raises)."""

    def wrap(method: str, handler: Handler) -> Handler:
        async def measured(**kwargs: Any) -> Any:
            started = time.perf_counter()
            outcome = "error"
            try:
                result = await handler(**kwargs)
                outcome = "ok"
                return result
            finally:
                RPC_SERVED.labels(method, outcome).inc()
                RPC_SERVED_DURATION.labels(method).observe(time.perf_counter() - started)

        return measured

    return {method: wrap(method, handler) for method, handler in handlers.items()}


class InstrumentedRpc:
    """An RPC caller whose calls are counted (ok, timeout, error) and timed, per service and method."""

    def __init__(self, inner: RpcCaller) -> None:
        self._inner = inner

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self._inner.call(service, method, timeout=timeout, **kwargs)
            outcome = "ok"
            return result
        except RpcTimeout:
            outcome = "timeout"
            raise
        finally:
            RPC_CALLS.labels(service, method, outcome).inc()
            RPC_CALL_DURATION.labels(service, method).observe(time.perf_counter() - started)
