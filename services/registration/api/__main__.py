"""python -m registration.api"""

from __future__ import annotations

from registration.api.app import ApiSettings, create_app
from registration.common.logsetup import setup_logging
from registration.common.web import serve


def main() -> None:
    setup_logging("api")
    app = create_app(ApiSettings.from_env())
    serve(app)


if __name__ == "__main__":
    main()
