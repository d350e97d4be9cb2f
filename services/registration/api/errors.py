"""Every error answer of the API is ``{"results": "<code>"}``, never an echo of what was sent."""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# Starlette's and FastAPI's own HTTP errors -> a code like every other refusal (400: a body that
# is not even text, or JSON nested beyond the parser's recursion limit).
_HTTP_CODES: Final = {400: "invalid_request", 401: "invalid_credentials", 404: "not_found", 405: "method_not_allowed"}


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the submitted values back (they may hold an OTP or a password attempt).
        errors = [
            {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
            for err in exc.errors()
        ]
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"results": "invalid_request", "detail": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.detail if isinstance(exc, HTTPException) else _HTTP_CODES.get(exc.status_code, "error")
        if not isinstance(code, str) or " " in code:
            code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(
            status_code=exc.status_code,
            content={"results": code},
            headers=dict(exc.headers) if exc.headers else None,
        )
