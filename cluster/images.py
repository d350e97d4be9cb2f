"""Image identity, pure: a build context is a set of files, and an image's tag is the hash of its inputs.

Tagging by input hash means an image is rebuilt only when something that goes into it changed.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TAG_LENGTH = 12


@dataclass(frozen=True)
class BuildContext:
    """Files of a docker build context (path inside the context -> content), plus build arguments."""

    files: Mapping[str, bytes]
    build_args: Mapping[str, str]

    @property
    def tag(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        for key in sorted(self.build_args):
            digest.update(f"arg:{key}={self.build_args[key]}".encode())
        return digest.hexdigest()[:TAG_LENGTH]

    def tar(self) -> bytes:
        """A reproducible tar of the context (fixed mtimes and owners)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name in sorted(self.files):
                data = self.files[name]
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def files_under(root: Path, prefix: str = "", exclude: Iterable[str] = ("__pycache__",)) -> dict[str, bytes]:
    """Every file below root, keyed by prefix + its relative path (skipping caches)."""
    skipped = set(exclude)
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not skipped.intersection(relative.parts) and path.suffix != ".pyc":
            found[prefix + relative.as_posix()] = path.read_bytes()
    return found


def hash_strings(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:TAG_LENGTH]
