"""Draining before a stop: health answers 404 (HAProxy's disable-on-404), requests in flight finish,
and only then does uvicorn get its exit signal."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from registration.common.web import DRAINING, DrainFirstServer, Draining, ServeSettings, uvicorn_config


@pytest.fixture(autouse=True)
def not_draining() -> Iterator[None]:
    DRAINING.clear()
    yield
    DRAINING.clear()


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def status_of(app: Draining, path: str) -> int:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "path": path, "headers": []}, receive, send))
    return int(sent[0]["status"])


def test_health_answers_404_only_while_draining_and_other_paths_are_served() -> None:
    app = Draining(ok_app)
    assert status_of(app, "/healthz") == 200
    DRAINING.set()
    assert status_of(app, "/healthz") == 404
    assert status_of(app, "/api/healthz") == 404
    assert status_of(app, "/api/getotp") == 200  # requests HAProxy already sent are served


def server(app: Draining, drain: float, grace: float) -> DrainFirstServer:
    return DrainFirstServer(uvicorn.Config(app), app, drain_seconds=drain, grace=grace)


def test_the_first_signal_drains_and_waits_for_requests_in_flight_before_exiting() -> None:
    app = Draining(ok_app)
    app.in_flight = 1  # a request riding out a database move
    serving = server(app, drain=0.2, grace=5)
    began = time.monotonic()
    serving.handle_exit(signal.SIGTERM, None)
    assert DRAINING.is_set() and not serving.should_exit
    time.sleep(0.5)
    assert not serving.should_exit, "a request is still in flight: uvicorn must keep its port open"
    app.in_flight = 0
    deadline = time.monotonic() + 3
    while not serving.should_exit and time.monotonic() < deadline:
        time.sleep(0.05)
    assert serving.should_exit and time.monotonic() - began >= 0.5


def test_a_request_that_never_ends_is_waited_for_at_most_the_grace() -> None:
    app = Draining(ok_app)
    app.in_flight = 1
    serving = server(app, drain=0.05, grace=0.3)
    serving.handle_exit(signal.SIGTERM, None)
    deadline = time.monotonic() + 3
    while not serving.should_exit and time.monotonic() < deadline:
        time.sleep(0.05)
    assert serving.should_exit


def test_a_second_signal_exits_at_once() -> None:
    app = Draining(ok_app)
    serving = server(app, drain=30, grace=30)
    serving.handle_exit(signal.SIGTERM, None)
    serving.handle_exit(signal.SIGTERM, None)
    assert serving.should_exit


def test_uvicorn_sends_no_server_banner_and_ignores_forwarded_headers() -> None:
    config = uvicorn_config(Draining(ok_app), ServeSettings.from_env(), 8000)
    assert config.server_header is False, "Server: uvicorn names the software to every client"
    assert config.proxy_headers is False  # the apps' own client_address() decides whom to believe


def test_services_keep_idle_connections_longer_than_haproxy_so_haproxy_closes_them_first() -> None:
    """uvicorn closing an idle connection as HAProxy reuses it loses a POST (no retry allowed)."""
    config = uvicorn_config(Draining(ok_app), ServeSettings.from_env(), 8000)
    template = (Path(__file__).parents[3] / "templates" / "haproxy" / "haproxy.cfg.j2").read_text()
    haproxy = [int(m) for m in re.findall(r"^\s*timeout (?:client|server|http-keep-alive) (\d+)s$", template, re.M)]
    assert len(haproxy) >= 2 and config.timeout_keep_alive > max(haproxy), (config.timeout_keep_alive, haproxy)
