"""The local Docker engine the lab runs on: found, or installed and started on a fresh Debian machine.

An engine that already runs is used as it is and never reconfigured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import docker
from docker.errors import DockerException

from cluster.errors import SwarmlabError
from cluster.local import run_local
from cluster.progress import PhaseResult
from cluster.waiting import Verdict, wait_until

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


def _answers() -> Verdict:
    try:
        docker.from_env(timeout=5).ping()
    except DockerException as error:
        return Verdict.waiting(str(error))
    return Verdict.ready()


def ensure_engine(progress: PhaseResult) -> None:
    """Make sure a Docker engine answers; as root on Debian, install docker.io and start dockerd."""
    if _answers().done:
        progress.note("Docker engine already running: using it as it is")
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SwarmlabError(
            "no Docker engine is running. Install and start one (Debian/Ubuntu: `apt-get install docker.io` "
            "then `systemctl start docker` or `dockerd &`), or run this as root on Debian/Ubuntu to let it do so"
        )
    if shutil.which("dockerd") is None:
        run_local(["apt-get", "update", "-q"])
        run_local(["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker.io"])
        progress.changed("installed Debian's docker.io")
    if Path("/run/systemd/system").exists():
        run_local(["systemctl", "start", "docker"])
    else:
        # No systemd (containers, CI sandboxes): start dockerd detached, in its own session, outliving us.
        with DOCKERD_LOG.open("ab") as log:
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    progress.changed("started dockerd")
    wait_until(_answers, what=f"dockerd answers (see {DOCKERD_LOG})", timeout=START_TIMEOUT)
