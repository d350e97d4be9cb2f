"""The session as a page sees it: loaded by the ``regsid`` cookie, saved with the cookie (re)set.

A request without a valid session gets a new id and a new CSRF token (an id the browser made up is
never adopted); :meth:`SessionCookie.rotate` gives a new id and token when the session gains privilege.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Request, Response

from registration.ui.sessions import SESSION_COOKIE, SessionStore, new_session_id


class SessionCookie:
    def __init__(self, ttl: int, secure: bool) -> None:
        self.ttl = ttl
        self.secure = secure

    async def load(self, request: Request) -> tuple[str, dict[str, Any]]:
        store: SessionStore = request.app.state.sessions
        sid = request.cookies.get(SESSION_COOKIE)
        data = await store.load(sid)
        if not data or sid is None:
            sid = new_session_id()  # never adopt an id the browser made up
            data = {"csrf": secrets.token_urlsafe(24)}
        return sid, data

    async def rotate(self, request: Request, sid: str, data: dict[str, Any]) -> str:
        store: SessionStore = request.app.state.sessions
        data["csrf"] = secrets.token_urlsafe(24)
        return await store.rotate(sid)

    async def commit(self, request: Request, response: Response, sid: str, data: dict[str, Any]) -> Response:
        store: SessionStore = request.app.state.sessions
        await store.save(sid, data)
        response.set_cookie(
            SESSION_COOKIE,
            sid,
            max_age=self.ttl,
            httponly=True,
            secure=self.secure,
            samesite="lax",
            path="/",
        )
        return response


def csrf_ok(data: dict[str, Any], token: str) -> bool:
    expected = str(data.get("csrf", ""))
    return bool(expected) and secrets.compare_digest(expected.encode(), token.encode())
