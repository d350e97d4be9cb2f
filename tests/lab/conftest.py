"""The lab the tests run on: its own cluster name, network and ports, so it never touches a user's lab.

One lab serves the whole session (lab-up, bootstrap and deploy-stack run once, through the real
`fab` command line); the fixture's finalizer tears it down (and checks nothing is left) unless
SWARMLAB_KEEP_LAB=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import docker
import httpx
import pytest

from cluster.config import Config, load_config
from cluster.inventory import Inventory
from cluster.lab.provider import LabProvider
from cluster.runners import SshRunner
from cluster.state import StatePaths
from cluster.unlockkeys import stored_keys

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")
CITEST_ENV = {
    "SWARMLAB_CLUSTER": "citest",
    "SWARMLAB_CIDR": "10.30.0.0/24",
    "SWARMLAB_OVERLAY_POOL": "10.131.0.0/16",
    "SWARMLAB_HTTP_PORT": "18080",
    "SWARMLAB_HTTPS_PORT": "18443",
    "SWARMLAB_SSH_PORT": "12222",
    "SWARMLAB_STATS_PORT": "18404",
}
# A developer's own lab instead of the CI lab (so two people never share one): export its SWARMLAB_*
# variables and LAB_TESTS_ON_OWN_LAB=1 (with SWARMLAB_KEEP_LAB=1 to keep it afterwards).
LAB_ENV = (
    {key: os.environ.get(key, value) for key, value in CITEST_ENV.items()}
    if os.environ.get("LAB_TESTS_ON_OWN_LAB") == "1"
    else CITEST_ENV
)


@dataclass
class FabLog:
    """Everything the fab commands printed in this session (the secrets test reads it all)."""

    outputs: list[str] = field(default_factory=list)


LOG = FabLog()
# State directories of other targets planted under the test lab's cluster name (tests/lab/test_hardening.py):
# the finalizer's lab-down must leave each exactly as it was (path, {file: content}); then they go.
PLANTED: list[tuple[Path, dict[str, bytes]]] = []


def fab(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 1500
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **LAB_ENV, **(env or {})}
    started = time.monotonic()
    done = subprocess.run(
        [FAB, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    LOG.outputs.append(done.stdout + done.stderr)
    print(
        f"$ fab {' '.join(args)}  ({time.monotonic() - started:.1f}s, exit {done.returncode})\n{done.stdout}{done.stderr}"
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"fab {' '.join(args)} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


@dataclass
class Lab:
    config: Config
    inventory: Inventory
    nodes: SshRunner

    @property
    def url(self) -> str:
        return self.inventory.endpoints.http

    @property
    def state(self) -> StatePaths:
        return self.config.state(provider="lab")

    @cached_property
    def tls(self) -> ssl.SSLContext:
        """Verifies HAProxy against the lab's own CA, and nothing else (httpx's verify=)."""
        return ssl.create_default_context(cafile=str(self.state.ca_cert))


def container_of(response: httpx.Response) -> str:
    """The container that answered. HAProxy strips the X-Served-By header, so the page says it: the
    UI's footer, or the hello page's heading."""
    found = re.search(r'<span id="hostname">([^<]+)</span>|Hello from ([^<]+)</h1>', response.text)
    assert found, f"no container named in {response.text[:300]!r}"
    return found.group(1) or found.group(2)


def wait_until_converged(lab: Lab, stack: str = "registration", timeout: float = 300) -> None:
    """Every service of the stack has all its replicas, healthy, and its last update completed, twice
    in a row (a recovery is over when every replica is back, not when the first one answers)."""
    from cluster.facts import read
    from cluster.facts.services import stack_services

    deadline = time.monotonic() + timeout
    streak = 0
    states: tuple[object, ...] = ()
    while streak < 2:
        assert time.monotonic() < deadline, f"stack {stack} did not converge within {timeout:.0f}s: {states}"
        time.sleep(2)
        found = read(lab.nodes, lab.inventory.managers[0], stack_services(stack), check=False)
        states = found
        streak = streak + 1 if found and all(s.converged for s in found) else 0


def lab_config() -> Config:
    return load_config(ROOT / "swarmlab.yaml", {**os.environ, **LAB_ENV})


def lab_down_leaves_nothing(config: Config) -> None:
    """lab-down removes every container, network and volume labelled with the lab, and its inventory."""
    fab("lab-down")
    engine = docker.from_env()
    selector: dict[str, str | list[str] | bool] = {"label": f"swarmlab.cluster={config.cluster}"}
    left = [
        *(c.name for c in engine.containers.list(all=True, filters=selector)),
        *(n.name for n in engine.networks.list(filters=selector)),
        *(v.name for v in engine.volumes.list(filters=selector)),
    ]
    assert left == [], f"lab-down left {left}"
    assert not config.state(provider="lab").inventory.exists()
    assert not config.state(provider="lab").unlock_keys.exists(), "the unlock keys of a swarm that is gone"
    for directory, contents in PLANTED:
        found = {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
        shutil.rmtree(directory, ignore_errors=True)
        assert found == contents, f"lab-down touched another target's state {directory}"


def no_secret_in_fab_output(config: Config) -> None:
    """Nothing any fab command of this session printed holds one of this lab's generated secrets."""
    state = config.state(provider="lab")
    values = [*json.loads(state.credentials.read_text()).values(), *stored_keys(state)]
    output = "\n".join(LOG.outputs)
    assert output and not [v for v in values if len(v) >= 8 and v in output], "a generated secret in fab output"


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The test lab, torn down by this fixture's finalizer (which checks lab-down left nothing)."""
    config = lab_config()
    try:
        fab("lab-up")
        fab("bootstrap")
        fab("deploy-stack")
        inventory = LabProvider().inventory(config, "lab")
        nodes = SshRunner(inventory)
        try:
            yield Lab(config, inventory, nodes)
            no_secret_in_fab_output(config)
        finally:
            nodes.close()
    finally:
        if os.environ.get("SWARMLAB_KEEP_LAB") != "1":
            lab_down_leaves_nothing(config)


@pytest.fixture(scope="module")
def api(lab: Lab) -> Iterator[httpx.Client]:
    """The API with its own credential, over HTTPS verified against the lab CA."""
    credentials = json.loads(lab.state.credentials.read_text())
    with httpx.Client(
        # Above the API's request deadline (60 s in the lab's values): the API's own answer (ok, or a 503/504
        # naming what it waited for) arrives instead of the client giving up first.
        base_url=lab.url + "/api",
        auth=("api", credentials["api_password"]),
        timeout=70,
        verify=lab.tls,
    ) as client:
        yield client
