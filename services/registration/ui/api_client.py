"""The UI's client of the API gateway: a POST with the user's address and the submission's idempotency
key, repeated after a transport failure (same key) within the UI's budget for one call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from registration.common.deadline import Deadline, backoff_delays, retry_until

# The name these lines were always logged under (the client was part of registration.ui.app).
log = logging.getLogger("registration.ui.app")


@dataclass(frozen=True)
class ApiContext:
    """What goes with a call besides the body: the end user's address (for the API's rate limits)
    and the submission's idempotency key."""

    client: str
    key: str


ApiPost = Callable[[str, dict[str, Any], ApiContext], Awaitable[tuple[int, Any]]]


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
