"""The local Docker engine the lab runs on: found, or installed and started on a fresh Debian machine.

An engine that already runs is used as it is and never reconfigured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
from docker.errors import DockerException

from cluster.errors import SwarmlabError
from cluster.progress import PhaseResult

DOCKERD_LOG = Path("/var/log/swarmlab-dockerd.log")
START_TIMEOUT = 60


def client() -> docker.DockerClient:
    try:
        engine = docker.from_env(timeout=300)
        engine.ping()
    except DockerException as error:
        raise SwarmlabError(
            f"no Docker engine answers ({error}). Start one, or run as root on Debian/Ubuntu so that "
            "`make demo` installs docker.io and starts dockerd"
        ) from None
    return engine


def _answers() -> bool:
    try:
        docker.from_env(timeout=5).ping()
    except DockerException:
        return False
    return True


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise SwarmlabError(f"on localhost: `{' '.join(command)}` failed (exit {done.returncode}):\n{tail}")


def ensure_engine(progress: PhaseResult) -> None:
    """Make sure a Docker engine answers; as root on Debian, install docker.io and start dockerd."""
    if _answers():
        progress.note("Docker engine already running: using it as it is")
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SwarmlabError(
            "no Docker engine is running. Install and start one (Debian/Ubuntu: `apt-get install docker.io` "
            "then `systemctl start docker` or `dockerd &`), or run this as root on Debian/Ubuntu to let it do so"
        )
    if shutil.which("dockerd") is None:
        _run(["apt-get", "update", "-q"])
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker.io"])
        progress.changed("installed Debian's docker.io")
    if Path("/run/systemd/system").exists():
        _run(["systemctl", "start", "docker"])
    else:
        # No systemd (containers, CI sandboxes): start dockerd detached, in its own session.
        with DOCKERD_LOG.open("ab") as log:
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    progress.changed("started dockerd")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _answers():
            return
        time.sleep(1)
    raise SwarmlabError(f"dockerd did not answer within {START_TIMEOUT}s; see {DOCKERD_LOG}")
