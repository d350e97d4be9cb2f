"""Serving a FastAPI app the same way in every HTTP service (behind HAProxy, graceful on SIGTERM)."""

from __future__ import annotations

from typing import Any

import uvicorn

from registration.common.settings import env_int, env_str


def serve(app: Any, default_port: int = 8000) -> None:
    uvicorn.run(
        app,
        host=env_str("HOST", "0.0.0.0"),
        port=env_int("PORT", default_port),
        log_config=None,
        # HAProxy adds X-Forwarded-For; trust it (only the lb node reaches the published ports).
        proxy_headers=True,
        forwarded_allow_ips=env_str("FORWARDED_ALLOW_IPS", "*"),
        timeout_graceful_shutdown=10,
    )
