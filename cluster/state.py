"""The operator's state directory of a cluster: keys, pinned host keys, inventory, credentials, the
cluster's TLS authority.

One directory per provider and cluster, `<root>/<provider>/<cluster>/`, so that a lab and a Pulumi
or static target that share a cluster name never share (nor delete) each other's credentials.
Files here hold secrets: directories are 700 and files 600, written so that no other user can read
them at any moment.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import SwarmlabError
from cluster.progress import say

# Cluster names as Docker accepts them in container, network and volume names; they also name a
# directory here, so nothing else (no '/', no '..') may reach a path.
CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,29}")
# What lived directly in <root>/<cluster>/ before state was kept per provider.
LEGACY_FILES = ("id_ed25519", "known_hosts", "inventory.json", "credentials")
# The provider that wrote a legacy inventory.json, by its "provider" field.
_INVENTORY_OWNERS = {"lab": "lab", "openstack": "pulumi", "static": "static"}


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
    def unlock_keys(self) -> Path:
        """The swarm's unlock keys (autolock), newest first, one per line (cluster/unlockkeys.py)."""
        return self.root / "swarm-unlock-keys"

    @property
    def backups(self) -> Path:
        """One directory per backup, named by its UTC time (`fab backup`)."""
        return self.root / "backups"

    @property
    def revisions(self) -> Path:
        """One directory per stack, one file per deploy of it (`fab history`, `fab rollback-stack`)."""
        return self.root / "revisions"

    @property
    def tls(self) -> Path:
        """The cluster's certificate authority and the certificates it issued (tls/ca.crt is the one to trust)."""
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls / "ca.crt"


def cluster_dir(root: Path, provider: str, cluster: str) -> StatePaths:
    """`<root>/<provider>/<cluster>`, after moving a legacy `<root>/<cluster>` there when it is this provider's."""
    if not CLUSTER_NAME.fullmatch(cluster):
        raise SwarmlabError(
            f"cluster name {cluster!r} cannot name a state directory: use ASCII letters, digits and '-' "
            "(not first), at most 30 characters"
        )
    migrate_legacy(root, provider, cluster)
    return StatePaths(root / provider / cluster)


def _is_legacy(directory: Path) -> bool:
    return directory.is_dir() and any((directory / name).is_file() for name in LEGACY_FILES)


def legacy_owner(directory: Path) -> str | None:
    """Which provider a legacy state directory belongs to, or None when nothing tells.

    Its inventory names it; without one, keys alone are a lab's (only lab-up writes keys), and
    credentials alone were written by deploy-stack on a Pulumi or a static target: which one, nothing says.
    """
    inventory = directory / "inventory.json"
    if inventory.is_file():
        match = re.search(r'"provider"\s*:\s*"([a-z]+)"', inventory.read_text(errors="replace"))
        return _INVENTORY_OWNERS.get(match.group(1)) if match else None
    if (directory / "credentials").is_file():
        return None
    return "lab"


def migrate_legacy(root: Path, provider: str, cluster: str) -> None:
    """Move `<root>/<cluster>/` (the layout before per-provider state) to `<root>/<provider>/<cluster>/`
    when it is this provider's; leave another provider's alone; stop when nothing tells whose it is."""
    legacy, wanted = root / cluster, root / provider / cluster
    if not _is_legacy(legacy) or wanted.exists():
        return
    owner = legacy_owner(legacy)
    if owner == provider:
        # Through a temporary name: a cluster named like a provider ("lab") moves into its own child.
        moving = root / f".migrating-{cluster}"
        legacy.rename(moving)
        private_dir(wanted.parent)
        moving.rename(wanted)
        say(f"moved the state of cluster {cluster!r} from {legacy} to {wanted} (state is kept per provider now)")
        return
    if owner is None and provider != "lab":
        raise SwarmlabError(
            f"{legacy} holds credentials of cluster {cluster!r} from before state was kept per provider, and "
            f"nothing in it says whether a Pulumi or a static target made them. Move it to where its target "
            f"looks, then run again: `mkdir -p {root / provider} && mv {legacy} {wanted}` (this target), or "
            f"`mkdir -p {root / 'static'} && mv {legacy} {root / 'static' / cluster}` (the other)"
        )


def private_dir(path: Path) -> Path:
    """A directory readable by its owner only: made 700 (with any missing parents), or tightened to 700."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only.

    A new file is created 600 beside the target and renamed over it: the data is never in a file
    another user could read (an existing file's looser mode does not carry over), and a crash leaves
    the old file whole, never a truncated credentials file.
    """
    private_dir(path.parent)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def remove_dir(paths: StatePaths) -> None:
    """The whole state directory of a cluster (lab-down --purge)."""
    shutil.rmtree(paths.root, ignore_errors=True)
