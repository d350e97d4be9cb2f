"""Serving a FastAPI app the same way in every HTTP service (behind HAProxy, graceful on SIGTERM)."""

from __future__ import annotations

from typing import Any

import uvicorn
from pydantic import Field

from registration.common.metrics import instrument_app
from registration.common.settings import EnvSettings, OptionalInt


class ServeSettings(EnvSettings):
    host: str = Field("0.0.0.0", validation_alias="HOST")
    port: OptionalInt = Field(None, validation_alias="PORT")  # None: the service's own default port
    forwarded_allow_ips: str = Field("*", validation_alias="FORWARDED_ALLOW_IPS")


def serve(app: Any, default_port: int = 8000) -> None:
    settings = ServeSettings.from_env()
    instrument_app(app)  # Prometheus metrics on their own port
    uvicorn.run(
        app,
        host=settings.host,
        port=default_port if settings.port is None else settings.port,
        log_config=None,
        # HAProxy adds X-Forwarded-For; trust it (only the lb node reaches the published ports).
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
    )
