"""A rehearsal of the tests' own (cluster `rehearsal-test`): rehearsal-up and bootstrap through the real
`fab` command line with `--target rehearsal`, torn down by the fixture's finalizer unless
SWARMLAB_KEEP_LAB=1; it deploys the hello and registration stacks. `make rehearsal-test` runs these; they are not part of `make test` yet (a first
boot installs every node's packages from the Debian mirror: minutes, not seconds)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from cluster.config import Config, load_config
from cluster.inventory import Inventory
from cluster.lab.rehearsal.nodes import inventory_of
from cluster.lab.rehearsal.provider import NAME
from cluster.runners import SshRunner

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")
REHEARSAL_ENV = {
    key: os.environ.get(key, value)
    for key, value in {
        "SWARMLAB_CLUSTER": "rehearsal-test",
        "SWARMLAB_CIDR": "10.40.0.0/24",
        "SWARMLAB_OVERLAY_POOL": "10.132.0.0/16",
        "SWARMLAB_HTTP_PORT": "28080",
        "SWARMLAB_HTTPS_PORT": "28443",
        "SWARMLAB_SSH_PORT": "22222",
        "SWARMLAB_STATS_PORT": "28404",
    }.items()
}


def fab(*args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run(
        [FAB, *args],
        cwd=ROOT,
        env={**os.environ, **REHEARSAL_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(f"$ fab {' '.join(args)}  ({time.monotonic() - started:.1f}s, exit {done.returncode})\n{done.stdout}")
    if check and done.returncode != 0:
        pytest.fail(f"fab {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@dataclass
class Rehearsal:
    config: Config
    inventory: Inventory
    nodes: SshRunner
    engine: docker.DockerClient

    def container(self, node: str) -> Container:
        return self.engine.containers.get(f"swarmlab-{self.config.cluster}-{node}")

    @property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.config.state(provider=NAME).ca_cert))


@pytest.fixture(scope="session")
def rehearsal() -> Iterator[Rehearsal]:
    config = load_config(ROOT / "swarmlab.yaml", {**os.environ, **REHEARSAL_ENV})
    try:
        fab("rehearsal-up")
        fab("bootstrap", "--target", NAME)
        fab("deploy-stack", "--target", NAME, "--stack", "hello")
        # With data on the storage node's volume: the workers see it through this machine's kernel
        # (no NFS client here; cluster/lab/rehearsal/nodes.py), everything else as on a cloud.
        fab("deploy-stack", "--target", NAME, "--stack", "registration")
        inventory = inventory_of(config)
        nodes = SshRunner(inventory)
        try:
            yield Rehearsal(config, inventory, nodes, docker.from_env())
        finally:
            nodes.close()
    finally:
        if os.environ.get("SWARMLAB_KEEP_LAB") != "1":
            fab("rehearsal-down")
            engine = docker.from_env()
            left = engine.containers.list(all=True, filters={"label": f"swarmlab.cluster={config.cluster}"})
            assert left == [], f"rehearsal-down left {[c.name for c in left]}"
