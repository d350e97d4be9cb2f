"""The cluster's generated passwords: made once, kept in the state directory (0600, owner only),
handed to the services only as Docker secrets."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from cluster.errors import SwarmlabError
from cluster.lab.keys import write_private

GENERATED = ("api_password", "db_password", "rabbitmq_password")


def load_or_create(path: Path) -> dict[str, str]:
    """Existing credentials are kept (the database was initialised with them); missing ones are made."""
    found: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in GENERATED if not found.get(name)]
    for name in missing:
        found[name] = secrets.token_urlsafe(24)
    if missing or not path.exists():
        write_private(path, (json.dumps(found, indent=2) + "\n").encode())
    return found


def read_secret_file(path: str, what: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise SwarmlabError(f"{what}: {file} does not exist; write the password there (mode 600)")
    return file.read_text().strip()


def secret_name(stack: str, key: str, value: str) -> str:
    """Docker secrets are immutable: a changed value gets a new name, and services roll onto it."""
    return f"{stack}_{key}_{hashlib.sha256(value.encode()).hexdigest()[:10]}"
