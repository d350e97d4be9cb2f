"""Keyed digests and short-lived signed tokens (HMAC-SHA256 under a key from a Docker secret).

Used for the OTP digests Redis keeps, the UI's CSRF tokens and the proof of authentication that
``/register`` asks for. A token is ``<payload, base64url JSON>.<HMAC of purpose and payload>``: the
purpose is under the MAC, so a token made for one use is worth nothing for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any, Final

TOKEN_MAX_LEN: Final = 1024


def keyed_digest(key: bytes, *parts: str) -> str:
    """HMAC-SHA256 of the NUL-joined parts, as 64 hex digits."""
    return hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, purpose: str, claims: dict[str, Any], *, expires_at: float) -> str:
    """A token carrying ``claims`` for ``purpose`` until ``expires_at`` (a Unix time)."""
    payload = _b64(json.dumps({**claims, "exp": round(expires_at, 3)}, separators=(",", ":")).encode())
    return f"{payload}.{_b64(hmac.new(key, f'{purpose}.{payload}'.encode(), hashlib.sha256).digest())}"


def verify(key: bytes, purpose: str, token: object, *, now: float) -> dict[str, Any] | None:
    """The claims of a token made by :func:`sign` with this key and purpose, not expired; else None."""
    if not isinstance(token, str) or not token.isascii() or len(token) > TOKEN_MAX_LEN:
        return None
    payload, dot, mac = token.partition(".")
    if not dot:
        return None
    expected = _b64(hmac.new(key, f"{purpose}.{payload}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        return None
    try:
        claims = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int | float) or claims["exp"] <= now:
        return None
    return claims
