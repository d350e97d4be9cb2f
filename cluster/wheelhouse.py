"""The Python wheelhouse the service images install from: downloaded on the operator's machine
(which reaches PyPI), so builds on the cluster need no index at all."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from cluster.errors import SwarmlabError
from cluster.local import run_local
from cluster.progress import PhaseResult

PLATFORMS = {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}
PYTHON_VERSION = "3.11"  # Debian 12's python3, which the runtime image installs


def ensure_wheelhouse(requirements: Path, cache: Path, arch: str, progress: PhaseResult) -> Path:
    if arch not in PLATFORMS:
        raise SwarmlabError(f"no wheel platform known for {arch}: the nodes must be x86_64 or aarch64")
    key = hashlib.sha256(requirements.read_bytes() + arch.encode()).hexdigest()[:12]
    target = cache / f"wheelhouse-{key}"
    if (target / ".complete").exists():
        return target
    scratch = cache / f"wheelhouse-{key}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    command = [
        sys.executable, "-m", "pip", "download", "-q", "-r", str(requirements), "--only-binary=:all:",
        "--platform", PLATFORMS[arch], "--python-version", PYTHON_VERSION, "--implementation", "cp", "-d", str(scratch),
    ]  # fmt: skip
    run_local(command, hint="the operator's machine must reach the Python package index to prepare the wheelhouse")
    (scratch / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    progress.changed(f"downloaded the wheelhouse for {requirements.name} ({arch})")
    return target
