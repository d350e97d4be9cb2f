"""OTP rules. Every decision that reads and writes shared state is one atomic step of the store
(a Redis Lua script in production), so concurrent requests cannot race past a rule:

* Only e-mails on the eligible list get an OTP.
* An OTP is 6 digits drawn with :mod:`secrets`; it expires after ``otp_ttl`` seconds (checked
  against the stored expiry time, and the store also drops the key after its TTL). The store
  keeps only a SHA-256 digest of the code (with the e-mail), never the code itself.
* An OTP is single-use: the check that matches deletes it in the same atomic step.
* Codes are compared as digests, so the comparison's timing says nothing about the code.
* ``max_attempts`` wrong codes lock the e-mail for ``lock_seconds``: counting, comparing and
  locking are one atomic step, so of 50 concurrent wrong guesses only ``max_attempts`` are
  compared; while locked every check is refused, the right code included, and no new OTP is
  issued. Requesting a new OTP does not reset the failure count.
* A successful check leaves an "authenticated" marker (TTL ``auth_ttl``) that ``/register``
  needs and consumes.
* Rate limits: at most ``rate_per_email`` OTP requests per eligible e-mail and
  ``rate_per_client`` per client address in each ``rate_window`` (0 disables a limit).
* Idempotency: within ``resend_window`` seconds of an OTP being issued, another request for the
  same e-mail sends no second mail (``already_sent``; the first mail's code stays valid) until
  that code is used. The same request repeated (same idempotency key: a retry after a lost
  reply) gets a fresh code, since no mail went out with the lost one. A repeated check with the
  same key returns the first answer instead of counting again.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from registration.common.emails import InvalidEmail
from registration.common.emails import normalize_email as _normalize_email

OTP_DIGITS: Final = 6
KEY_MAX_LEN: Final = 128


class CreateStatus(StrEnum):
    CREATED = "created"
    ALREADY_SENT = "already_sent"
    UNKNOWN_EMAIL = "unknown_email"
    LOCKED = "locked"
    RATE_LIMITED = "rate_limited"
    INVALID_EMAIL = "invalid_email"


class AuthStatus(StrEnum):
    OK = "ok"
    INVALID = "invalid_otp"
    EXPIRED = "expired"  # no live OTP for this e-mail (never requested, expired or used)
    LOCKED = "locked"
    UNKNOWN_EMAIL = "unknown_email"
    INVALID_EMAIL = "invalid_email"


@dataclass(frozen=True)
class OtpPolicy:
    otp_ttl: int = 300
    max_attempts: int = 5
    lock_seconds: int = 900
    auth_ttl: int = 900
    resend_window: int = 60
    rate_window: int = 600
    rate_per_email: int = 5
    rate_per_client: int = 50

    def __post_init__(self) -> None:
        if min(self.otp_ttl, self.max_attempts, self.lock_seconds, self.auth_ttl, self.rate_window) < 1:
            raise ValueError("OTP policy values must be positive")
        if min(self.resend_window, self.rate_per_email, self.rate_per_client) < 0:
            raise ValueError("OTP resend window and rate limits must not be negative")


class OtpStore(Protocol):
    """The storage the rules need; ``issue`` and ``check`` are each one atomic step."""

    async def add_eligible(self, emails: Iterable[str]) -> int: ...
    async def count_eligible(self) -> int: ...
    async def issue(
        self, email: str, *, digest: str, key: str, client: str, now: float, policy: OtpPolicy
    ) -> tuple[str, int]:
        """(status, retry_after seconds) after applying every issuing rule."""
        ...

    async def check(self, email: str, *, digest: str, key: str, now: float, policy: OtpPolicy) -> str: ...
    async def release_sent(self, email: str, key: str) -> None:
        """Forget that request ``key`` mailed an OTP (its mail could not be sent)."""
        ...

    async def is_authenticated(self, email: str, now: float) -> bool: ...
    async def consume_authenticated(self, email: str, now: float) -> bool:
        """Remove the marker; True only for the call that actually removed a live one."""
        ...


@dataclass(frozen=True)
class CreateResult:
    status: CreateStatus
    otp: str | None = None  # only for the worker, to hand to the mailer; never sent to a client
    retry_after: int = 0

    def __repr__(self) -> str:  # keep the code out of any accidental log line
        return f"CreateResult(status={self.status.value!r}, otp={'******' if self.otp else None})"


Clock = Callable[[], float]


def normalize_email(email: str) -> str:
    """Canonical form; an invalid address raises :class:`InvalidEmail`."""
    return _normalize_email(email)


def generate_otp() -> str:
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


def code_digest(email: str, code: str) -> str:
    """What the store keeps and compares instead of the code (64 hex digits)."""
    return hashlib.sha256(f"{email}\0{code.strip()}".encode()).hexdigest()


def clean_key(key: str | None) -> str:
    """An idempotency key (random when the caller gave none: then nothing is ever replayed)."""
    if key is None or key == "":
        return secrets.token_hex(16)
    value = str(key)
    if len(value) > KEY_MAX_LEN or not value.isprintable():
        raise ValueError("bad idempotency key")
    return value


async def set_eligible(store: OtpStore, emails: Iterable[str]) -> tuple[int, list[str]]:
    """Add e-mails to the eligible list. Returns (number added, rejected invalid entries)."""
    good: list[str] = []
    bad: list[str] = []
    for raw in emails:
        try:
            good.append(normalize_email(raw))
        except InvalidEmail:
            bad.append(raw)
    added = await store.add_eligible(good) if good else 0
    return added, bad


async def create_otp(
    store: OtpStore,
    email: str,
    policy: OtpPolicy,
    *,
    client: str = "",
    key: str | None = None,
    clock: Clock = time.time,
    generate: Callable[[], str] = generate_otp,
) -> CreateResult:
    try:
        address = normalize_email(email)
    except InvalidEmail:
        return CreateResult(CreateStatus.INVALID_EMAIL)
    code = generate()
    status, retry_after = await store.issue(
        address, digest=code_digest(address, code), key=clean_key(key), client=client, now=clock(), policy=policy
    )
    result = CreateStatus(status)
    return CreateResult(result, code if result is CreateStatus.CREATED else None, retry_after)


async def authenticate(
    store: OtpStore,
    email: str,
    otp: str,
    policy: OtpPolicy,
    *,
    key: str | None = None,
    clock: Clock = time.time,
) -> AuthStatus:
    try:
        address = normalize_email(email)
    except InvalidEmail:
        return AuthStatus.INVALID_EMAIL
    status = await store.check(
        address, digest=code_digest(address, str(otp)), key=clean_key(key), now=clock(), policy=policy
    )
    return AuthStatus(status)


async def release_sent(store: OtpStore, email: str, key: str) -> None:
    try:
        await store.release_sent(normalize_email(email), clean_key(key))
    except InvalidEmail:
        return


async def is_authenticated(store: OtpStore, email: str, *, clock: Clock = time.time) -> bool:
    try:
        return await store.is_authenticated(normalize_email(email), clock())
    except InvalidEmail:
        return False


async def consume_authenticated(store: OtpStore, email: str, *, clock: Clock = time.time) -> bool:
    try:
        return await store.consume_authenticated(normalize_email(email), clock())
    except InvalidEmail:
        return False
