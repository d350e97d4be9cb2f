"""The operator's state directory of a cluster: keys, pinned host keys, inventory, credentials.

Files here hold secrets, so they are written readable by their owner only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @property
    def private_key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.json"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def backups(self) -> Path:
        """One directory per backup, named by its UTC time (`fab backup`)."""
        return self.root / "backups"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only, created with that mode (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT: force it
