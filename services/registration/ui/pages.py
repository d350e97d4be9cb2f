"""The UI's pages: Jinja2 templates with the serving container's hostname, and error pages that say
what went wrong in words (the API's code goes in ``X-Error-Code``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.templating import Jinja2Templates

from registration.ui.sessions import SessionsAway

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

MESSAGES = {
    "unknown_email": "This e-mail is not on the list of admitted students.",
    "invalid_email": "Please enter a valid e-mail address.",
    "locked": "Too many wrong attempts. This e-mail is locked for a while; try again later.",
    "rate_limited": "Too many requests for a one-time password. Please wait a few minutes and try again.",
    "invalid_otp": "Wrong OTP. Please try again.",
    "expired": "Your OTP has expired or was already used. Please request a new one.",
    "not_authenticated": "Please verify your e-mail with an OTP first.",
    "already_registered": "This e-mail is already registered.",
    "backend_timeout": "The service is busy. Please try again in a moment.",
    "backend_unavailable": "The service is unavailable. Please try again in a moment.",
    "backend_error": "The service is unavailable. Please try again in a moment.",
    "invalid_request": "Please check the form and try again.",
}


class Pages:
    """Renders the templates; every page shows ``hostname`` (the container that answered)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def page(
        self, request: Request, template: str, data: dict[str, Any], status_code: int = 200, **ctx: Any
    ) -> Response:
        context = {"hostname": self.hostname, "csrf": data.get("csrf", ""), "email": data.get("email"), **ctx}
        return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)

    def error_page(
        self, request: Request, template: str, data: dict[str, Any], status_code: int, code: Any
    ) -> Response:
        # The page says it in words; the header says it in the API's code (for tests and logs).
        known = str(code) if str(code) in MESSAGES else "backend_error"
        words = {"text" if template == "message.html" else "error": MESSAGES[known]}
        response = self.page(request, template, data, status_code, **words)
        response.headers["X-Error-Code"] = known
        return response

    def bad_form(
        self, request: Request, template: str, data: dict[str, Any], code: str = "invalid_request"
    ) -> Response:
        return self.error_page(request, template, data, 400, code)


def add_error_pages(app: FastAPI, pages: Pages) -> None:
    @app.exception_handler(SessionsAway)
    async def sessions_away(request: Request, exc: SessionsAway) -> Response:
        # The session store stayed away past its outage budget: say so (503), never a 500.
        response = pages.error_page(request, "message.html", {}, 503, "backend_unavailable")
        response.headers["Retry-After"] = "5"
        return response
