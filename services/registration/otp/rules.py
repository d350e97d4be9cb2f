"""OTP rules, free of any I/O: they work on an :class:`OtpStore` (Redis in production, an
in-memory fake in the unit tests).

* Only e-mails on the eligible list get an OTP.
* An OTP is 6 digits drawn with :mod:`secrets`; it expires after ``otp_ttl`` seconds (checked
  here against the stored expiry time, and the store also drops the key after its TTL).
* An OTP is single-use: a successful check deletes it, and only the caller whose delete removed
  it succeeds, so two concurrent checks of the same OTP cannot both pass.
* Codes are compared with :func:`hmac.compare_digest`.
* ``max_attempts`` wrong codes lock the e-mail for ``lock_seconds``: while locked every check is
  refused, the right code included, and no new OTP is issued. Requesting a new OTP does not
  reset the failure count.
* A successful check leaves an "authenticated" marker (TTL ``auth_ttl``) that ``/register``
  needs and consumes.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

OTP_DIGITS: Final = 6
EMAIL_MAX_LEN: Final = 254
_EMAIL_RE: Final = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


class OtpStore(Protocol):
    """The storage the rules need. ``ttl`` values are seconds."""

    async def add_eligible(self, emails: Iterable[str]) -> int: ...
    async def count_eligible(self) -> int: ...
    async def is_eligible(self, email: str) -> bool: ...
    async def put_otp(self, email: str, value: str, ttl: int) -> None: ...
    async def get_otp(self, email: str) -> str | None: ...
    async def delete_otp(self, email: str) -> bool:
        """Delete the OTP; True only for the call that actually removed it."""
        ...

    async def incr_failures(self, email: str, ttl: int) -> int: ...
    async def reset_failures(self, email: str) -> None: ...
    async def set_locked(self, email: str, ttl: int) -> None: ...
    async def is_locked(self, email: str) -> bool: ...
    async def set_authenticated(self, email: str, ttl: int) -> None: ...
    async def is_authenticated(self, email: str) -> bool: ...
    async def consume_authenticated(self, email: str) -> bool:
        """Remove the marker; True only for the call that actually removed it."""
        ...


@dataclass(frozen=True)
class OtpPolicy:
    otp_ttl: int = 300
    max_attempts: int = 5
    lock_seconds: int = 900
    auth_ttl: int = 900

    def __post_init__(self) -> None:
        if min(self.otp_ttl, self.max_attempts, self.lock_seconds, self.auth_ttl) < 1:
            raise ValueError("OTP policy values must be positive")


class CreateStatus(StrEnum):
    CREATED = "created"
    UNKNOWN_EMAIL = "unknown_email"
    LOCKED = "locked"
    INVALID_EMAIL = "invalid_email"


class AuthStatus(StrEnum):
    OK = "ok"
    INVALID = "invalid_otp"
    EXPIRED = "expired"  # no live OTP for this e-mail (never requested, expired or used)
    LOCKED = "locked"
    UNKNOWN_EMAIL = "unknown_email"
    INVALID_EMAIL = "invalid_email"


@dataclass(frozen=True)
class CreateResult:
    status: CreateStatus
    otp: str | None = None  # only for the worker, to hand to the mailer; never sent to a client

    def __repr__(self) -> str:  # keep the code out of any accidental log line
        return f"CreateResult(status={self.status.value!r}, otp={'******' if self.otp else None})"


Clock = Callable[[], float]


def normalize_email(email: str) -> str:
    return email.strip().lower()


def is_valid_email(email: str) -> bool:
    return len(email) <= EMAIL_MAX_LEN and _EMAIL_RE.fullmatch(email) is not None


def generate_otp() -> str:
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


def _encode(code: str, expires_at: float) -> str:
    return f"{code}:{expires_at:.3f}"


def _decode(value: str) -> tuple[str, float] | None:
    code, sep, exp = value.partition(":")
    if not sep:
        return None
    try:
        return code, float(exp)
    except ValueError:
        return None


async def set_eligible(store: OtpStore, emails: Iterable[str]) -> tuple[int, list[str]]:
    """Add e-mails to the eligible list. Returns (number added, rejected invalid entries)."""
    good: list[str] = []
    bad: list[str] = []
    for raw in emails:
        email = normalize_email(raw)
        if is_valid_email(email):
            good.append(email)
        else:
            bad.append(raw)
    added = await store.add_eligible(good) if good else 0
    return added, bad


async def create_otp(
    store: OtpStore,
    email: str,
    policy: OtpPolicy,
    *,
    clock: Clock = time.time,
    generate: Callable[[], str] = generate_otp,
) -> CreateResult:
    email = normalize_email(email)
    if not is_valid_email(email):
        return CreateResult(CreateStatus.INVALID_EMAIL)
    if not await store.is_eligible(email):
        return CreateResult(CreateStatus.UNKNOWN_EMAIL)
    if await store.is_locked(email):
        return CreateResult(CreateStatus.LOCKED)
    code = generate()
    await store.put_otp(email, _encode(code, clock() + policy.otp_ttl), policy.otp_ttl)
    return CreateResult(CreateStatus.CREATED, code)


def codes_match(expected: str, given: str) -> bool:
    """Constant-time comparison of two codes."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


async def authenticate(
    store: OtpStore,
    email: str,
    otp: str,
    policy: OtpPolicy,
    *,
    clock: Clock = time.time,
) -> AuthStatus:
    email = normalize_email(email)
    if not is_valid_email(email):
        return AuthStatus.INVALID_EMAIL
    if not await store.is_eligible(email):
        return AuthStatus.UNKNOWN_EMAIL
    if await store.is_locked(email):
        return AuthStatus.LOCKED
    stored = await store.get_otp(email)
    decoded = _decode(stored) if stored is not None else None
    if decoded is None:
        return AuthStatus.EXPIRED
    code, expires_at = decoded
    if clock() >= expires_at:
        await store.delete_otp(email)
        return AuthStatus.EXPIRED
    if codes_match(code, otp.strip()):
        if not await store.delete_otp(email):
            return AuthStatus.EXPIRED  # a concurrent check used it first
        await store.reset_failures(email)
        await store.set_authenticated(email, policy.auth_ttl)
        return AuthStatus.OK
    failures = await store.incr_failures(email, policy.lock_seconds)
    if failures >= policy.max_attempts:
        await store.set_locked(email, policy.lock_seconds)
        await store.delete_otp(email)
        await store.reset_failures(email)
    return AuthStatus.INVALID


async def is_authenticated(store: OtpStore, email: str) -> bool:
    return await store.is_authenticated(normalize_email(email))


async def consume_authenticated(store: OtpStore, email: str) -> bool:
    return await store.consume_authenticated(normalize_email(email))
