"""The UI's pages by step: ``/`` requests an OTP, ``/authen`` checks it, ``/reg`` registers; ``/healthz``.

Every form carries the session's CSRF token; every step sets the session's cookie, and saves the
session once an OTP was requested (see :mod:`registration.ui.session_cookie`).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from registration.common.emails import InvalidEmail, normalize_email
from registration.common.text import clean_name
from registration.ui.api_client import ApiContext
from registration.ui.pages import Pages
from registration.ui.session_cookie import SessionCookie, csrf_ok
from registration.ui.sessions import SESSION_COOKIE, SessionStore

# API answers passed on as the page's status; any other refusal is a 400 (the form is wrong).
_PASSED_ON = frozenset({429, 502, 503, 504})


def refused(status_code: int) -> int:
    return status_code if status_code in _PASSED_ON else 400


async def api(
    request: Request, path: str, payload: dict[str, Any], source: str = ""
) -> tuple[int, Any, dict[str, Any]]:
    """POST to the API with the end user's address, the session's source and a fresh idempotency key
    for this submission: the status, the ``results`` and the whole answer."""
    ctx = ApiContext(client=str(getattr(request.state, "client", "")), key=secrets.token_urlsafe(24), source=source)
    status_code, body = await request.app.state.api_post(path, payload, ctx)
    return status_code, body.get("results"), body


def add_otp_request_pages(app: FastAPI, pages: Pages, cookie: SessionCookie) -> None:
    @app.get("/", response_class=HTMLResponse)
    async def otp_form(request: Request) -> Response:
        sid, data = await cookie.load(request)
        return await cookie.commit(request, pages.page(request, "otp.html", data), sid, data)

    @app.post("/", response_class=HTMLResponse)
    async def otp_submit(request: Request, email: str = Form(""), csrf: str = Form("")) -> Response:
        sid, data = await cookie.load(request, posted=True)
        if not csrf_ok(data, csrf):
            return await cookie.commit(request, pages.bad_form(request, "otp.html", data), sid, data)
        try:
            address = normalize_email(email)
        except InvalidEmail:
            return await cookie.commit(request, pages.bad_form(request, "otp.html", data, "invalid_email"), sid, data)
        status_code, results, _ = await api(request, "/getotp", {"email": address})
        if status_code == 200 and results == "sent":
            data.update({"email": address, "authen": False})
            sid = await cookie.rotate(request, sid, data)
            return await cookie.commit(request, RedirectResponse("authen", status_code=303), sid, data)
        page = pages.error_page(request, "otp.html", data, refused(status_code), results)
        return await cookie.commit(request, page, sid, data)


def add_otp_check_pages(app: FastAPI, pages: Pages, cookie: SessionCookie) -> None:
    @app.get("/authen", response_class=HTMLResponse)
    async def authen_form(request: Request) -> Response:
        sid, data = await cookie.load(request)
        if not data.get("email"):
            return await cookie.commit(request, RedirectResponse("./", status_code=303), sid, data)
        return await cookie.commit(request, pages.page(request, "authen.html", data), sid, data)

    @app.post("/authen", response_class=HTMLResponse)
    async def authen_submit(request: Request, otp: str = Form(""), csrf: str = Form("")) -> Response:
        sid, data = await cookie.load(request, posted=True)
        if not data.get("email"):
            return await cookie.commit(request, RedirectResponse("./", status_code=303), sid, data)
        if not csrf_ok(data, csrf):
            return await cookie.commit(request, pages.bad_form(request, "authen.html", data), sid, data)
        code = otp.strip()
        if not (len(code) == 6 and code.isascii() and code.isdigit()):
            return await cookie.commit(request, pages.bad_form(request, "authen.html", data, "invalid_otp"), sid, data)
        payload = {"email": data["email"], "otp": code}
        status_code, results, body = await api(request, "/authen", payload, source=cookie.source(sid))
        if status_code == 200 and results == "ok" and isinstance(body.get("proof"), str):
            data["authen"] = True
            data["proof"] = body["proof"]  # what /register asks for
            sid = await cookie.rotate(request, sid, data)
            return await cookie.commit(request, RedirectResponse("reg", status_code=303), sid, data)
        page = pages.error_page(request, "authen.html", data, refused(status_code), results)
        return await cookie.commit(request, page, sid, data)


def add_registration_pages(app: FastAPI, pages: Pages, cookie: SessionCookie) -> None:
    @app.get("/reg", response_class=HTMLResponse)
    async def reg_form(request: Request) -> Response:
        sid, data = await cookie.load(request)
        if not data.get("authen"):
            page = pages.error_page(request, "message.html", data, 403, "not_authenticated")
            return await cookie.commit(request, page, sid, data)
        return await cookie.commit(request, pages.page(request, "reg.html", data), sid, data)

    @app.post("/reg", response_class=HTMLResponse)
    async def reg_submit(
        request: Request, firstname: str = Form(""), lastname: str = Form(""), csrf: str = Form("")
    ) -> Response:
        sid, data = await cookie.load(request, posted=True)
        if not data.get("authen") or not data.get("proof"):
            page = pages.error_page(request, "message.html", data, 403, "not_authenticated")
            return await cookie.commit(request, page, sid, data)
        if not csrf_ok(data, csrf):
            return await cookie.commit(request, pages.bad_form(request, "reg.html", data), sid, data)
        try:
            first, last = clean_name(firstname), clean_name(lastname)
        except ValueError:
            return await cookie.commit(request, pages.bad_form(request, "reg.html", data), sid, data)
        status_code, results, _ = await api(
            request,
            "/register",
            {"firstname": first, "lastname": last, "email": data["email"], "proof": data["proof"]},
        )
        if status_code == 200 and isinstance(results, dict) and "student_id" in results:
            store: SessionStore = request.app.state.sessions
            await store.delete(sid)
            resp = pages.page(
                request,
                "message.html",
                {},
                text=f"Registration complete. Your student ID is {int(results['student_id'])}. "
                "A confirmation has been sent by e-mail.",
            )
            resp.delete_cookie(SESSION_COOKIE, path="/")
            return resp
        page = pages.error_page(request, "reg.html", data, refused(status_code), results)
        return await cookie.commit(request, page, sid, data)


def add_health(app: FastAPI, hostname: str) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "hostname": hostname}


STYLE = (Path(__file__).parent / "static" / "style.css").read_text()


def add_style(app: FastAPI) -> None:
    """The pages' style sheet, a file rather than inline (the edge's CSP allows 'self' only)."""

    @app.get("/style.css", include_in_schema=False)
    async def style() -> Response:
        return Response(STYLE, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})
