"""The local Docker engine the lab runs on: found, or installed and started on a fresh Debian machine.

An engine that already runs is used as it is and never reconfigured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import docker
from docker.errors import DockerException
from docker.models.containers import Container

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


# --- node containers: each with a Docker engine of its own ------------------------------------------

# What a nested Docker engine needs on a host where --privileged is refused (see ARCHITECTURE.md).
NESTED_CAP_ADD = ["ALL"]
NESTED_CAP_DROP = ["SYS_RESOURCE"]
NESTED_SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]


def create_node_container(
    engine: docker.DockerClient,
    image: str,
    *,
    name: str,
    hostname: str,
    ip: str,
    network: str,
    labels: Mapping[str, str],
    binds: Mapping[str, Mapping[str, str]],
    ports: Mapping[str, tuple[str, int]],
    environment: Mapping[str, str] | None = None,
    tmpfs: Mapping[str, str] | None = None,
    devices: Sequence[str] | None = None,
    restart_policy: Mapping[str, str] | None = None,
) -> Container:
    """A node container (created, not started) that runs its own Docker engine: a lab node or a
    rehearsal node, at `ip` on `network`, with `ports` ("443/tcp": (address, host port)) published,
    and Docker's `restart_policy` ({"Name": "on-failure"}), if any."""
    host_config = engine.api.create_host_config(
        binds=dict(binds),
        tmpfs=dict(tmpfs) if tmpfs else None,
        devices=list(devices) if devices else None,
        port_bindings={int(p.split("/")[0]): binding for p, binding in ports.items()},
        cap_add=NESTED_CAP_ADD,
        cap_drop=NESTED_CAP_DROP,
        security_opt=NESTED_SECURITY_OPT,
        restart_policy=dict(restart_policy) if restart_policy else None,
    )
    # `--security-opt systempaths=unconfined` is a CLI spelling; the API wants empty masked and
    # read-only path lists, so the nested engine can write /proc/sys (ip_forward, bridge settings).
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []
    created = engine.api.create_container(
        image,
        name=name,
        # Docker sets the hostname at every start (over cloud-init's on a rehearsal node): the node's name.
        hostname=hostname,
        labels=dict(labels),
        environment=dict(environment) if environment else None,
        ports=[int(p.split("/")[0]) for p in ports],
        host_config=host_config,
        networking_config=engine.api.create_networking_config(
            # The stubs say EndpointConfig, the API (and the SDK's own code) takes {network: config}.
            {network: engine.api.create_endpoint_config(ipv4_address=ip)}  # type: ignore[arg-type]
        ),
    )
    return engine.containers.get(created["Id"])
