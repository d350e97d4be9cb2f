"""The cluster's generated secrets: made once, kept in the state directory (0600, owner only),
handed to the services only as Docker secrets."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

from cluster.errors import SwarmlabError
from cluster.state import write_private

# Keys secret names are derived with (an HMAC), so a secret's name tells nothing about its value.
NAME_KEY = "secret_name_key"
# keepalived's VRRP password for two lbs: VRRPv2 carries 8 characters (keepalived/model.py says more).
VRRP_PASSWORD = "vrrp_password"
# Secrets that cannot be the default 32 characters: how to make each.
_MAKERS: dict[str, Callable[[], str]] = {VRRP_PASSWORD: lambda: secrets.token_urlsafe(6)}  # 8 characters


def load_or_create(path: Path, names: Iterable[str]) -> dict[str, str]:
    """Existing values are kept (a database was initialised with them); missing ones are made."""
    found: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in (*names, NAME_KEY) if not found.get(name)]
    for name in missing:
        found[name] = _MAKERS.get(name, lambda: secrets.token_urlsafe(24))()
    if missing or not path.exists() or path.stat().st_mode & 0o077:
        write_private(path, (json.dumps(found, indent=2) + "\n").encode())
    return found


def vrrp_password(path: Path) -> str:
    """The cluster's VRRP password (made once, kept with the other credentials): what keepalived's
    configuration on both lbs carries. Never printed: it goes only into that root-only file."""
    return load_or_create(path, [VRRP_PASSWORD])[VRRP_PASSWORD]


def read_secret_file(path: str, what: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise SwarmlabError(f"{what}: {file} does not exist; write the password there (mode 600)")
    return file.read_text().strip()


def load_existing(path: Path) -> dict[str, str]:
    """The values made so far, read only (a read-only task such as `fab logs` creates nothing)."""
    found: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    return found


def fingerprint(name_key: str) -> str:
    """What names a set of credentials on the swarm (a label on the secrets they made): a hash of the
    secret-name key, which tells nothing about the key or any password."""
    return hashlib.sha256(f"swarmlab state\0{name_key}".encode()).hexdigest()[:16]
