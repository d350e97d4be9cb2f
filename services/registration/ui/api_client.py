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
    """What goes with a call besides the body: the end user's address (for the API's rate limits),
    the submission's idempotency key and the session's opaque source (wrong codes count against it)."""

    client: str
    key: str
    source: str = ""


# (status, the answer's JSON object: "results" and, for /authen, "proof")
ApiPost = Callable[[str, dict[str, Any], ApiContext], Awaitable[tuple[int, dict[str, Any]]]]
SESSION_HEADER = "X-Client-Session"


def http_api_post(client: httpx.AsyncClient, budget: float) -> ApiPost:
    """POST to the API, repeating transport failures (with the same idempotency key) within ``budget``."""

    async def post(path: str, payload: dict[str, Any], ctx: ApiContext) -> tuple[int, dict[str, Any]]:
        deadline = Deadline(budget)
        headers = {"Idempotency-Key": ctx.key}
        if ctx.client:
            headers["X-Forwarded-For"] = ctx.client
        if ctx.source:
            headers[SESSION_HEADER] = ctx.source

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
            return 503, {"results": "backend_unavailable"}
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return resp.status_code, {"results": "backend_error"}
        return resp.status_code, body

    return post
