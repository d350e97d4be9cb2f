"""The services' Prometheus metrics: HTTP requests by route template and status, RPC handlers and
calls by outcome, registrations, and the metrics endpoint itself."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from registration.api.app import create_app
from registration.common import metrics
from registration.common.rpc import RpcTimeout
from registration.otp.rules import OtpPolicy
from tests.unit.services.fakes import FakeBackend
from tests.unit.services.test_api import EMAIL, eligible, get_authenticated, post
from tests.unit.services.test_api import settings as api_settings


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_http_requests_are_counted_by_route_template_and_status() -> None:
    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        if item == "boom":
            raise RuntimeError("boom")
        return {"item": item}

    app.add_middleware(metrics.HttpMetrics)
    before = value("http_requests_total", method="GET", route="/items/{item}", status="200")
    errors = value("http_requests_total", method="GET", route="/items/{item}", status="500")
    unmatched = value("http_requests_total", method="GET", route="unmatched", status="404")
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/items/1")
        client.get("/items/2")
        client.get("/items/boom")
        client.get("/no/such/page")
    assert value("http_requests_total", method="GET", route="/items/{item}", status="200") == before + 2
    assert value("http_requests_total", method="GET", route="/items/{item}", status="500") == errors + 1
    # Paths no route serves share one label value: a scan cannot blow up the series count.
    assert value("http_requests_total", method="GET", route="unmatched", status="404") == unmatched + 1
    assert value("http_request_duration_seconds_count", method="GET", route="/items/{item}") >= 3


def test_rpc_handlers_are_counted_ok_or_error() -> None:
    async def fine(x: int) -> int:
        return x + 1

    async def broken() -> None:
        raise ValueError("no")

    handlers = metrics.instrument_handlers({"fine": fine, "broken": broken})
    ok, error = (
        value("rpc_server_requests_total", method="fine", outcome="ok"),
        value("rpc_server_requests_total", method="broken", outcome="error"),
    )

    async def call(method: str, **kwargs: Any) -> Any:
        return await handlers[method](**kwargs)

    assert asyncio.run(call("fine", x=1)) == 2
    with pytest.raises(ValueError, match="no"):
        asyncio.run(call("broken"))
    assert value("rpc_server_requests_total", method="fine", outcome="ok") == ok + 1
    assert value("rpc_server_requests_total", method="broken", outcome="error") == error + 1


class SlowRpc:
    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        raise RpcTimeout("late")


def test_rpc_calls_are_counted_with_their_outcome() -> None:
    before = value("rpc_client_calls_total", service="otp", method="create", outcome="timeout")
    with pytest.raises(RpcTimeout):
        asyncio.run(metrics.InstrumentedRpc(SlowRpc()).call("otp", "create", email="a@b.c"))
    assert value("rpc_client_calls_total", service="otp", method="create", outcome="timeout") == before + 1


def test_a_registration_counts_once_and_a_refused_one_not_at_all() -> None:
    backend = FakeBackend(OtpPolicy(otp_ttl=300, max_attempts=5, lock_seconds=900, auth_ttl=600))
    app = create_app(api_settings(), rpc=backend)  # with the admin credential the eligible list needs
    before = value("registrations_total")
    with TestClient(app) as client:
        eligible(client, EMAIL)
        get_authenticated(client, backend)
        assert post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL}).status_code == 200
        get_authenticated(client, backend)
        assert post(client, "/register", {"firstname": "B", "lastname": "C", "email": EMAIL}).status_code == 409
    assert value("registrations_total") == before + 1


def test_the_metrics_server_serves_the_text_format(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("METRICS_PORT", str(port))
    monkeypatch.setattr(metrics, "_started", type(metrics._started)())
    assert metrics.start_metrics_server() == port
    assert metrics.start_metrics_server() == port  # once per process: a second call starts nothing
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "# TYPE registrations_total counter" in text and "process_cpu_seconds_total" in text
    monkeypatch.setenv("METRICS_PORT", "0")
    monkeypatch.setattr(metrics, "_started", type(metrics._started)())
    assert metrics.start_metrics_server() is None
