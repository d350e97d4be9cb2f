"""OTP rules. Every decision that reads and writes shared state is one atomic step of the store
(a Redis Lua script in production), so concurrent requests cannot race past a rule:

* Only e-mails on the eligible list get a mailed OTP, but every answer is the same for an address
  that is not on the list (no oracle): a code is issued (and never mailed), the rate limits, the
  resend window, the failures and the locks apply to it alike, and its right code is still wrong.
* An OTP is 6 digits drawn with :mod:`secrets`; it expires after ``otp_ttl`` seconds (checked
  against the stored expiry time, and the store also drops the key after its TTL). The store
  keeps only an HMAC-SHA256 of the code and the e-mail under a secret key (:class:`CodeDigest`),
  never the code: a dump or a backup without the key gives no way to test the 10^6 codes.
* An OTP is single-use: the check that matches deletes it in the same atomic step.
* Codes are compared as digests, so the comparison's timing says nothing about the code.
* Wrong codes are counted per e-mail and *source* (the UI's session, or the client address when
  the caller names no session): ``max_attempts`` of them lock that source out of that e-mail for
  ``lock_seconds``, and leave the code live for the owner, who asks from another session. Higher
  ceilings bound what many sources can do: ``max_attempts_per_client`` per e-mail and client
  address lock that address out of it, ``max_attempts_per_email`` in all lock the e-mail for
  everyone and drop its code. Counting, comparing and locking are one atomic step, so of 50
  concurrent wrong guesses only ``max_attempts`` are compared; a locked source is refused even
  the right code. Requesting a new OTP resets no count; the right code resets its source's and the
  e-mail's counts.
* A successful check leaves an "authenticated" marker (TTL ``auth_ttl``) that ``/register``
  needs and consumes.
* Rate limits: at most ``rate_per_email`` OTP requests per e-mail and ``rate_per_client`` per
  client address in each ``rate_window`` (0 disables a limit); checks are limited per client
  address by ``rate_per_client`` too (a count of their own).
* Idempotency: within ``resend_window`` seconds of an OTP being issued, another request for the
  same e-mail sends no second mail (``already_sent``; the first mail's code stays valid) until
  that code is used. A request replayed with the same idempotency key gets the first request's
  answer (``already_sent``: nothing new is mailed); only the same *attempt* repeated (the gateway's
  retry after a lost reply, within one HTTP request) gets a fresh code, since no mail went out with
  the lost one. A repeated check with the same key returns the first answer instead of counting again.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from registration.common.emails import InvalidEmail
from registration.common.emails import normalize_email as _normalize_email
from registration.common.signing import keyed_digest

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
    RATE_LIMITED = "rate_limited"
    UNKNOWN_EMAIL = "unknown_email"  # answers of an older worker only: an unknown e-mail is answered as any other
    INVALID_EMAIL = "invalid_email"


@dataclass(frozen=True)
class OtpPolicy:
    otp_ttl: int = 300
    max_attempts: int = 5  # wrong codes per e-mail and source (a session, or a client address)
    max_attempts_per_client: int = 10  # per e-mail and client address, whatever the sessions
    max_attempts_per_email: int = 100  # per e-mail in all: then it is locked for everyone
    lock_seconds: int = 900
    auth_ttl: int = 900
    resend_window: int = 60
    rate_window: int = 600
    rate_per_email: int = 5
    rate_per_client: int = 50

    def __post_init__(self) -> None:
        tiers = (self.max_attempts, self.max_attempts_per_client, self.max_attempts_per_email)
        if min(self.otp_ttl, *tiers, self.lock_seconds, self.auth_ttl, self.rate_window) < 1:
            raise ValueError("OTP policy values must be positive")
        if min(self.resend_window, self.rate_per_email, self.rate_per_client) < 0:
            raise ValueError("OTP resend window and rate limits must not be negative")


class OtpStore(Protocol):
    """The storage the rules need; ``issue`` and ``check`` are each one atomic step."""

    async def add_eligible(self, emails: Iterable[str]) -> int: ...
    async def count_eligible(self) -> int: ...
    async def issue(
        self, email: str, *, digest: str, key: str, attempt: str, client: str, now: float, policy: OtpPolicy
    ) -> tuple[str, int]:
        """(status, retry_after seconds) after applying every issuing rule."""
        ...

    async def check(
        self, email: str, *, digest: str, key: str, source: str, client: str, now: float, policy: OtpPolicy
    ) -> str: ...
    async def release_sent(self, email: str, key: str) -> None:
        """Forget that request ``key`` mailed an OTP (its mail could not be sent): the next request,
        or the same key again, mails at once."""
        ...

    async def mark_mailed(self, email: str, key: str, attempt: str) -> bool:
        """Record that ``attempt`` of request ``key`` mailed its code: a replay of the key now gets
        ``already_sent``. False when another attempt has taken the key over (or it expired)."""
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


class CodeDigest:
    """What the store keeps and compares instead of the code: HMAC-SHA256 of the e-mail and the code
    under the worker's secret key (``OTP_DIGEST_KEY_FILE``), 64 hex digits."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the OTP digest key must be at least 16 bytes")
        self._key = key

    def __call__(self, email: str, code: str) -> str:
        return keyed_digest(self._key, email, code.strip())

    def __repr__(self) -> str:  # the key never shows
        return "CodeDigest(<key>)"


def source_of(source: str, client: str) -> str:
    """Whom wrong codes are counted against: the caller's session if it named one, else the client address."""
    if source:
        return f"s:{source}"
    return f"a:{client}" if client else "-"


def window_retry_after(now: float, window: int) -> int:
    """Seconds until the current rate window ends (the ``Retry-After`` of a rate-limited request)."""
    return max(1, math.ceil((math.floor(now / window) + 1) * window - now))


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
    digest: CodeDigest,
    client: str = "",
    key: str | None = None,
    attempt: str | None = None,
    clock: Clock = time.time,
    generate: Callable[[], str] = generate_otp,
) -> CreateResult:
    """``attempt`` names one try of the request ``key`` (the gateway's HTTP request): only that try
    repeated gets a fresh code; another with the same key gets ``already_sent``. Without it, every
    request with the key counts as the same try (what a gateway of the previous version sends)."""
    try:
        address = normalize_email(email)
    except InvalidEmail:
        return CreateResult(CreateStatus.INVALID_EMAIL)
    code = generate()
    request_key = clean_key(key)
    status, retry_after = await store.issue(
        address,
        digest=digest(address, code),
        key=request_key,
        attempt=clean_key(attempt) if attempt else request_key,
        client=client,
        now=clock(),
        policy=policy,
    )
    result = CreateStatus(status)
    return CreateResult(result, code if result is CreateStatus.CREATED else None, retry_after)


async def authenticate(
    store: OtpStore,
    email: str,
    otp: str,
    policy: OtpPolicy,
    *,
    digest: CodeDigest,
    key: str | None = None,
    source: str = "",
    client: str = "",
    clock: Clock = time.time,
) -> AuthStatus:
    try:
        address = normalize_email(email)
    except InvalidEmail:
        return AuthStatus.INVALID_EMAIL
    status = await store.check(
        address,
        digest=digest(address, str(otp)),
        key=clean_key(key),
        source=source_of(source, client),
        client=client,
        now=clock(),
        policy=policy,
    )
    return AuthStatus(status)


async def release_sent(store: OtpStore, email: str, key: str) -> None:
    try:
        await store.release_sent(normalize_email(email), clean_key(key))
    except InvalidEmail:
        return


async def mark_mailed(store: OtpStore, email: str, key: str, attempt: str) -> bool:
    try:
        return await store.mark_mailed(normalize_email(email), clean_key(key), clean_key(attempt))
    except InvalidEmail:
        return False


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
