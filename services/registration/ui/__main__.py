"""python -m registration.ui"""

from __future__ import annotations

import uvicorn

from registration.common.logsetup import setup_logging
from registration.common.redisconn import make_redis
from registration.common.settings import RedisSettings, env_int, env_str
from registration.ui.app import UiSettings, create_app


def main() -> None:
    setup_logging("ui")
    redis_settings = RedisSettings.from_env()
    app = create_app(UiSettings.from_env(), lambda: make_redis(redis_settings))
    uvicorn.run(
        app,
        host=env_str("HOST", "0.0.0.0"),
        port=env_int("PORT", 8000),
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=env_str("FORWARDED_ALLOW_IPS", "*"),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
