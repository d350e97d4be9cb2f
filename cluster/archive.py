"""Tar archives made in memory, reproducibly (fixed mtimes and owners): build contexts and files
copied into containers. The one tar builder of the project."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping


def tar_bytes(files: Mapping[str, bytes], modes: Mapping[str, int] | None = None, default_mode: int = 0o644) -> bytes:
    """A tar of `files` (name -> content) in name order; `modes` overrides a file's mode.

    Names lose a leading slash, so "/etc/x" lands at etc/x when extracted at /.
    """
    modes = modes or {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            info.mode = modes.get(name, default_mode)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
