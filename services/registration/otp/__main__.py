"""python -m registration.otp"""

from __future__ import annotations

from collections.abc import Mapping

from registration.common.redisconn import make_redis
from registration.common.rpc import Handler
from registration.common.settings import RedisSettings
from registration.common.worker import Hook, run_worker
from registration.otp.rules import CodeDigest
from registration.otp.service import TRANSIENT, OtpService, OtpSettings, policy_from_env
from registration.otp.store import RedisOtpStore


async def _factory() -> tuple[Mapping[str, Handler], Hook | None]:
    settings = OtpSettings.from_env()
    client = make_redis(RedisSettings.from_env())
    digest = CodeDigest(settings.digest_key.get_secret_value().encode())
    service = OtpService(RedisOtpStore(client), policy_from_env(settings), digest)

    async def shutdown() -> None:
        await client.aclose()

    return service.handlers(), shutdown


def main() -> None:
    run_worker("otp", _factory, transient=TRANSIENT)


if __name__ == "__main__":
    main()
