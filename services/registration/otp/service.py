"""RPC handlers of the ``otp`` worker."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from registration.common.rpc import Handler
from registration.common.settings import EnvSettings, Int
from registration.otp import rules
from registration.otp.rules import OtpPolicy, OtpStore

log = logging.getLogger(__name__)


class OtpSettings(EnvSettings):
    otp_ttl: Int = Field(300, validation_alias="OTP_TTL")
    max_attempts: Int = Field(5, validation_alias="OTP_MAX_ATTEMPTS")
    lock_seconds: Int = Field(900, validation_alias="OTP_LOCK_SECONDS")
    auth_ttl: Int = Field(900, validation_alias="AUTH_TTL")


def policy_from_env() -> OtpPolicy:
    settings = OtpSettings.from_env()
    return OtpPolicy(
        otp_ttl=settings.otp_ttl,
        max_attempts=settings.max_attempts,
        lock_seconds=settings.lock_seconds,
        auth_ttl=settings.auth_ttl,
    )


class OtpService:
    def __init__(self, store: OtpStore, policy: OtpPolicy) -> None:
        self.store = store
        self.policy = policy

    async def create_email_list(self, email_list: list[str]) -> dict[str, Any]:
        if not isinstance(email_list, list) or not all(isinstance(e, str) for e in email_list):
            raise TypeError("email_list must be a list of strings")
        added, rejected = await rules.set_eligible(self.store, email_list)
        total = await self.store.count_eligible()
        log.info("eligible list: %d added, %d rejected, %d total", added, len(rejected), total)
        return {"added": added, "total": total, "rejected": rejected}

    async def create(self, email: str) -> dict[str, Any]:
        """Issue an OTP. The code is returned to the caller (the API gateway) only so that it can
        pass it to email_otp.send; the gateway never puts it in an HTTP response."""
        result = await rules.create_otp(self.store, email, self.policy)
        log.info("otp.create for %s: %s", rules.normalize_email(email), result.status.value)
        return {"status": result.status.value, "otp": result.otp}

    async def authen(self, email: str, otp: str) -> dict[str, Any]:
        status = await rules.authenticate(self.store, email, str(otp), self.policy)
        log.info("otp.authen for %s: %s", rules.normalize_email(email), status.value)
        return {"status": status.value}

    async def is_authenticated(self, email: str) -> bool:
        return await rules.is_authenticated(self.store, email)

    async def consume_authenticated(self, email: str) -> bool:
        return await rules.consume_authenticated(self.store, email)

    async def delete(self, email: str) -> bool:
        forget = getattr(self.store, "forget", None)
        if forget is not None:
            await forget(rules.normalize_email(email))
        return True

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "create_email_list": self.create_email_list,
            "create": self.create,
            "authen": self.authen,
            "is_authenticated": self.is_authenticated,
            "consume_authenticated": self.consume_authenticated,
            "delete": self.delete,
        }
