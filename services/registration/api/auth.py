"""Who may call the API: HTTP basic auth with two roles, "api" (the UI) and "admin" (the eligible list).

The guard middleware (``registration.common.web.Guard``) asks :meth:`Roles.authorize` before a byte
of the body is read; every router requires its role again (:meth:`Roles.require`), which also
documents the scheme in OpenAPI.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic

from registration.api.settings import ApiSettings
from registration.common.web import Denial

# Module level on purpose: with postponed annotations FastAPI resolves Annotated[...] strings
# against the module's globals, not a closure's locals. Documents the scheme in OpenAPI; the
# credentials themselves are checked by the guard before the body is read.
basic = HTTPBasic(realm="registration", auto_error=False)

PUBLIC_PATHS: Final = frozenset(
    {"/healthz", "/api/healthz", "/api/docs", "/api/openapi.json", "/api/docs/oauth2-redirect"}
)
ADMIN_PATHS: Final = frozenset({"/create_email_list", "/api/create_email_list"})
CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="registration"'}


def decode_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


class Roles:
    """The configured credentials; the admin role exists only with an admin password."""

    def __init__(self, settings: ApiSettings) -> None:
        self._roles: list[tuple[str, bytes, bytes]] = [
            ("api", settings.api_user.encode(), settings.api_password.get_secret_value().encode())
        ]
        if settings.admin_password is not None:
            admin_password = settings.admin_password.get_secret_value().encode()
            self._roles.append(("admin", settings.admin_user.encode(), admin_password))

    def role_of(self, header: str | None) -> str | None:
        creds = decode_basic(header)
        if creds is None:
            return None
        found = None
        for role, user, password in self._roles:
            # Every comparison runs, in constant time, whatever matches.
            user_ok = secrets.compare_digest(creds[0], user)
            pass_ok = secrets.compare_digest(creds[1], password)
            if user_ok and pass_ok:
                found = role
        return found

    def authorize(self, path: str, headers: Mapping[str, str]) -> Denial | None:
        """The guard's question: None lets the request through."""
        if path in PUBLIC_PATHS:
            return None
        role = self.role_of(headers.get("authorization"))
        if role is None:
            return 401, "invalid_credentials", CHALLENGE
        needed = "admin" if path in ADMIN_PATHS else "api"
        if role != needed:
            return 403, "forbidden", {}
        return None

    def require(self, role: str) -> Any:
        """A router dependency: only ``role`` passes."""

        def check(request: Request, _: Annotated[Any, Depends(basic)]) -> None:
            # Defence in depth: the guard has already refused anyone else.
            if self.role_of(request.headers.get("authorization")) != role:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid_credentials", headers=CHALLENGE)

        return Depends(check)


def body_limit(settings: ApiSettings) -> Callable[[str], int]:
    """The guard's body limit per path: only an authenticated admin gets a large body through
    (the guard checks the credentials first)."""

    def limit_for(path: str) -> int:
        return settings.max_admin_body_bytes if path in ADMIN_PATHS else settings.max_body_bytes

    return limit_for
