"""The API's calls to the workers: one deadline per request, RPC failures as HTTP answers, replies
read as a status, business refusals as their HTTP status."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse

from registration.api.settings import ApiSettings
from registration.common.deadline import Deadline
from registration.common.rpc import (
    RpcCaller,
    RpcError,
    RpcRemoteError,
    RpcTimeout,
    RpcUnavailable,
    call_with_retry,
)

# The name these lines were always logged under (the calls were part of registration.api.app).
log = logging.getLogger("registration.api.app")

_KEY_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{16,128}$")

# Business refusals -> HTTP status (body: {"results": "<reason>"}).
REFUSAL_STATUS: dict[str, int] = {
    "invalid_email": status.HTTP_422_UNPROCESSABLE_CONTENT,
    "unknown_email": status.HTTP_403_FORBIDDEN,
    "locked": status.HTTP_429_TOO_MANY_REQUESTS,
    "rate_limited": status.HTTP_429_TOO_MANY_REQUESTS,
    "invalid_otp": status.HTTP_401_UNAUTHORIZED,
    "expired": status.HTTP_401_UNAUTHORIZED,
    "not_authenticated": status.HTTP_403_FORBIDDEN,
    "invalid_proof": status.HTTP_403_FORBIDDEN,
    "already_registered": status.HTTP_409_CONFLICT,
}


def get_rpc(request: Request) -> RpcCaller:
    caller: RpcCaller = request.app.state.rpc
    return caller


Rpc = Annotated[RpcCaller, Depends(get_rpc)]


def json_results(status_code: int, results: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"results": results}, headers=dict(headers or {}))


def state_of(reply: Any) -> str:
    return str(reply.get("status")) if isinstance(reply, dict) else "backend_error"


def refusal(state: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return json_results(REFUSAL_STATUS.get(state, status.HTTP_502_BAD_GATEWAY), state, headers)


def idempotency_key(request: Request) -> str:
    given = request.headers.get("idempotency-key")
    if given is None:
        return uuid.uuid4().hex  # a key of our own: retries of this request only
    if not _KEY_RE.fullmatch(given):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid_idempotency_key")
    return given


class Backend:
    """Calls within a request's deadline (``REQUEST_DEADLINE``), each attempt within ``RPC_TIMEOUT``."""

    def __init__(self, settings: ApiSettings) -> None:
        self._request_deadline = settings.request_deadline
        self._rpc_timeout = settings.rpc_timeout

    def deadline(self) -> Deadline:
        return Deadline(self._request_deadline)

    async def call(self, rpc_: RpcCaller, until: Deadline, service: str, method: str, **kwargs: Any) -> Any:
        """``service.method``, repeated until ``until``; what still fails becomes a 504, 503 or 502."""
        try:
            return await call_with_retry(
                rpc_, service, method, deadline=until, attempt_timeout=self._rpc_timeout, safe=True, **kwargs
            )
        except RpcTimeout:
            log.warning("%s.%s timed out", service, method)
            raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, "backend_timeout") from None
        except RpcUnavailable:
            log.warning("%s.%s: backend unavailable until the deadline", service, method)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "backend_unavailable", {"Retry-After": "5"}
            ) from None
        except RpcRemoteError as exc:
            if exc.transient:
                log.warning("%s.%s: a dependency stayed unavailable until the deadline", service, method)
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE, "backend_unavailable", {"Retry-After": "5"}
                ) from None
            log.warning("%s.%s failed: %s", service, method, exc)
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, "backend_error") from None
        except RpcError as exc:
            log.warning("%s.%s failed: %s", service, method, exc)
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, "backend_error") from None
