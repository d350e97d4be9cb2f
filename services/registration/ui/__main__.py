"""python -m registration.ui"""

from __future__ import annotations

from registration.common.logsetup import setup_logging
from registration.common.redisconn import make_redis
from registration.common.settings import RedisSettings
from registration.common.web import serve
from registration.ui.app import UiSettings, create_app


def main() -> None:
    setup_logging("ui")
    redis_settings = RedisSettings.from_env()
    app = create_app(UiSettings.from_env(), lambda: make_redis(redis_settings))
    serve(app)


if __name__ == "__main__":
    main()
