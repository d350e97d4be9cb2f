"""The session as a page sees it: loaded by the ``regsid`` cookie, saved with the cookie (re)set.

Nothing is stored for a visitor until an OTP has been requested from a posted form: a page shown to
a browser without a stored session carries a fresh id in the cookie and a CSRF token signed for
that id (an HMAC under the UI's key, ``CSRF_KEY_FILE``), so a million cookieless GETs store nothing.
A stored session's token is the same HMAC of its id; :meth:`SessionCookie.rotate` gives a new id
(and so a new token) when the session gains privilege. An id the browser made up is never adopted:
a page gets a new one, and a form posted with it carries no token that matches (it needs the key).
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Request, Response

from registration.common.signing import keyed_digest
from registration.ui.sessions import SESSION_COOKIE, SessionStore, new_session_id, valid_session_id


class SessionCookie:
    def __init__(self, ttl: int, secure: bool, key: bytes) -> None:
        self.ttl = ttl
        self.secure = secure
        self._key = key

    def token(self, sid: str) -> str:
        """The CSRF token of the forms shown with session id ``sid``."""
        return keyed_digest(self._key, "csrf", sid)

    def source(self, sid: str) -> str:
        """What the API counts wrong codes against: this session, opaque (the id itself never leaves)."""
        return keyed_digest(self._key, "source", sid)[:32]

    async def load(self, request: Request, *, posted: bool = False) -> tuple[str, dict[str, Any]]:
        """The stored session, or none yet: for a page a new id; for a posted form the cookie's id,
        which its token was signed for (checked by :func:`csrf_ok`)."""
        store: SessionStore = request.app.state.sessions
        sid = request.cookies.get(SESSION_COOKIE)
        data = await store.load(sid)
        if not data or sid is None:
            data = {}
            if sid is None or not (posted and valid_session_id(sid)):
                sid = new_session_id()  # never adopt an id the browser made up
        data["csrf"] = self.token(sid)
        return sid, data

    async def rotate(self, request: Request, sid: str, data: dict[str, Any]) -> str:
        store: SessionStore = request.app.state.sessions
        new = await store.rotate(sid)
        data["csrf"] = self.token(new)
        return new

    async def commit(self, request: Request, response: Response, sid: str, data: dict[str, Any]) -> Response:
        """Stores the session once it holds an e-mail (an OTP was requested); sets the cookie always."""
        if data.get("email"):
            store: SessionStore = request.app.state.sessions
            await store.save(sid, {k: v for k, v in data.items() if k != "csrf"})
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
