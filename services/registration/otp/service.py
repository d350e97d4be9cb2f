"""RPC handlers of the ``otp`` worker.

Every Redis operation is retried (reconnecting) until the request's deadline: each one is safe
to repeat, the two scripts through the request's idempotency key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.exceptions
from pydantic import Field

from registration.common.deadline import TransientError, current_deadline, retry_until
from registration.common.emails import mask_email
from registration.common.rpc import Handler
from registration.common.settings import EnvSettings, Int, Password
from registration.otp import rules
from registration.otp.rules import AuthStatus, CodeDigest, OtpPolicy, OtpStore

log = logging.getLogger(__name__)

T = TypeVar("T")

# Redis restarting, moving, or loading its data after a restart.
REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    OSError,
)
TRANSIENT: tuple[type[BaseException], ...] = (TransientError, *REDIS_TRANSIENT, TimeoutError)


class OtpSettings(EnvSettings):
    otp_ttl: Int = Field(300, validation_alias="OTP_TTL")
    max_attempts: Int = Field(5, validation_alias="OTP_MAX_ATTEMPTS")
    max_attempts_per_client: Int = Field(10, validation_alias="OTP_MAX_ATTEMPTS_PER_CLIENT")
    max_attempts_per_email: Int = Field(100, validation_alias="OTP_MAX_ATTEMPTS_PER_EMAIL")
    lock_seconds: Int = Field(900, validation_alias="OTP_LOCK_SECONDS")
    auth_ttl: Int = Field(900, validation_alias="AUTH_TTL")
    resend_window: Int = Field(60, validation_alias="OTP_RESEND_WINDOW")
    rate_window: Int = Field(600, validation_alias="OTP_RATE_WINDOW")
    rate_per_email: Int = Field(5, validation_alias="OTP_RATE_PER_EMAIL")
    rate_per_client: Int = Field(50, validation_alias="OTP_RATE_PER_CLIENT")
    # The key of the codes' HMAC in Redis (a Docker secret): without it a dump tells nothing.
    digest_key: Password = Field(validation_alias="OTP_DIGEST_KEY")


def policy_from_env(settings: OtpSettings | None = None) -> OtpPolicy:
    settings = settings or OtpSettings.from_env()
    return OtpPolicy(
        otp_ttl=settings.otp_ttl,
        max_attempts=settings.max_attempts,
        max_attempts_per_client=settings.max_attempts_per_client,
        max_attempts_per_email=settings.max_attempts_per_email,
        lock_seconds=settings.lock_seconds,
        auth_ttl=settings.auth_ttl,
        resend_window=settings.resend_window,
        rate_window=settings.rate_window,
        rate_per_email=settings.rate_per_email,
        rate_per_client=settings.rate_per_client,
    )


def _normalized(email: str) -> str:
    try:
        return rules.normalize_email(email)
    except ValueError:
        return "<invalid>"


def _masked(email: str) -> str:
    """What a log line shows of an address: ``a***@example.org``."""
    address = _normalized(email)
    return address if address == "<invalid>" else mask_email(address)


class OtpService:
    def __init__(self, store: OtpStore, policy: OtpPolicy, digest: CodeDigest, clock: rules.Clock = time.time) -> None:
        self.store = store
        self.policy = policy
        self.digest = digest
        self._clock = clock

    async def _retry(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await retry_until(current_deadline(), operation, transient=REDIS_TRANSIENT, what=f"redis {what}")

    async def create_email_list(self, email_list: list[str]) -> dict[str, Any]:
        if not isinstance(email_list, list) or not all(isinstance(e, str) for e in email_list):
            raise TypeError("email_list must be a list of strings")
        added, rejected = await self._retry("add eligible", lambda: rules.set_eligible(self.store, email_list))
        total = await self._retry("count eligible", self.store.count_eligible)
        log.info("eligible list: %d added, %d rejected, %d total", added, len(rejected), total)
        return {"added": added, "total": total, "rejected": rejected}

    async def create(
        self, email: str, client: str = "", key: str | None = None, attempt: str | None = None
    ) -> dict[str, Any]:
        """Issue an OTP. The code is returned to the caller (the API gateway) only so that it can
        pass it to email_otp.send; the gateway never puts it in an HTTP response. ``attempt``: the
        gateway's HTTP request (see :func:`rules.create_otp`)."""
        result = await self._retry(
            "issue",
            lambda: rules.create_otp(
                self.store,
                email,
                self.policy,
                digest=self.digest,
                client=str(client),
                key=key,
                attempt=attempt,
                clock=self._clock,
            ),
        )
        log.info("otp.create for %s: %s", _masked(email), result.status.value)
        return {"status": result.status.value, "otp": result.otp, "retry_after": result.retry_after}

    async def authen(
        self, email: str, otp: str, key: str | None = None, client: str = "", source: str = ""
    ) -> dict[str, Any]:
        """Check a code. Wrong ones count against ``source`` (the caller's session; else ``client``)."""
        status = await self._retry(
            "check",
            lambda: rules.authenticate(
                self.store,
                email,
                str(otp),
                self.policy,
                digest=self.digest,
                key=key,
                source=str(source),
                client=str(client),
                clock=self._clock,
            ),
        )
        log.info("otp.authen for %s: %s", _masked(email), status.value)
        reply: dict[str, Any] = {"status": status.value}
        if status is AuthStatus.RATE_LIMITED:
            reply["retry_after"] = rules.window_retry_after(self._clock(), self.policy.rate_window)
        return reply

    async def release_sent(self, email: str, key: str) -> bool:
        await self._retry("release", lambda: rules.release_sent(self.store, email, key))
        return True

    async def mark_mailed(self, email: str, key: str, attempt: str) -> bool:
        return await self._retry("mark mailed", lambda: rules.mark_mailed(self.store, email, key, attempt))

    async def is_authenticated(self, email: str) -> bool:
        return await self._retry(
            "is_authenticated", lambda: rules.is_authenticated(self.store, email, clock=self._clock)
        )

    async def consume_authenticated(self, email: str) -> bool:
        return await self._retry(
            "consume_authenticated", lambda: rules.consume_authenticated(self.store, email, clock=self._clock)
        )

    async def delete(self, email: str) -> bool:
        forget = getattr(self.store, "forget", None)
        if forget is not None:
            await self._retry("forget", lambda: forget(_normalized(email)))
        return True

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "create_email_list": self.create_email_list,
            "create": self.create,
            "authen": self.authen,
            "release_sent": self.release_sent,
            "mark_mailed": self.mark_mailed,
            "is_authenticated": self.is_authenticated,
            "consume_authenticated": self.consume_authenticated,
            "delete": self.delete,
        }
