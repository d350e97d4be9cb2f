"""python -m registration.api"""

from __future__ import annotations

import uvicorn

from registration.api.app import ApiSettings, create_app
from registration.common.logsetup import setup_logging
from registration.common.settings import env_int, env_str


def main() -> None:
    setup_logging("api")
    app = create_app(ApiSettings.from_env())
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
