"""The redesign's promises on a real lab: a second workload bundle deploys and answers through HAProxy
next to the registration stack, and the tasks reach a cluster through a static inventory with no
usable local Docker engine (the storage node then makes the Debian base image itself)."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
from pathlib import Path

import docker
import httpx
import pytest

from cluster.config import load_config
from cluster.images import base_image
from tests.lab.conftest import ROOT, Lab, container_of, fab
from topology import REGISTRY_DATA_DIR

pytestmark = pytest.mark.lab
NOWHERE = {"DOCKER_HOST": "tcp://127.0.0.1:9"}  # the discard port: no Docker engine answers there


def test_a_second_bundle_answers_next_to_the_registration_stack(lab: Lab) -> None:
    out = fab("deploy-stack", "--stack", "hello").stdout
    assert "stack hello deployed" in out or "the deployed stack equals the rendered one" in out
    served_by = set()
    with httpx.Client(timeout=10, verify=lab.tls) as client:
        # Every hello replica (one per worker), not just the first answer.
        for _ in range(30):
            response = client.get(lab.url + "/hello/")
            assert response.status_code == 200 and "Hello from" in response.text
            served_by.add(container_of(response))
            if len(served_by) == len(lab.inventory.workers):
                break
        assert len(served_by) == len(lab.inventory.workers), served_by
        ui = client.get(lab.url + "/")
        assert ui.status_code == 200 and "Hello from" not in ui.text, "the registration UI still owns /"
        assert client.get(lab.url + "/api/docs").status_code in (200, 401)
    again = fab("deploy-stack", "--stack", "hello").stdout
    assert "result: no change" in again


def test_an_image_missing_from_the_registry_is_copied_from_the_machine_image_cache(lab: Lab) -> None:
    """The machine's image cache (one volume every lab's storage node mounts) fills an empty registry:
    hello, removed from the cluster registry, comes back as a copy from the cache, not a build."""
    storage = lab.inventory.storage
    assert storage is not None
    fab("build-images", "--stack", "hello")  # in the registry and in the cache now (built, copied or kept)
    assert "machine image cache: volume swarmlab-image-cache" in fab("lab-status").stdout
    lab.nodes.run(storage, f"rm -rf {REGISTRY_DATA_DIR}/docker/registry/v2/repositories/swarmlab/hello")
    out = fab("build-images", "--stack", "hello").stdout
    copied = re.search(r"copied hello:(\w+) from the image cache to the registry", out)
    assert copied, out
    assert "built and pushed" not in out and "copied swarmlab/debian" not in out, "nothing built"
    assert "result: no change" in fab("build-images", "--stack", "hello").stdout
    # The copy is a whole image: a worker pulls it from the registry (its manifest, each layer checked).
    worker = lab.inventory.workers[0]
    ref = f"{lab.inventory.registry}/swarmlab/hello:{copied[1]}"
    lab.nodes.run(worker, f"docker rmi -f {ref} >/dev/null 2>&1; docker pull -q {ref}")


def test_every_worker_runs_the_network_anchor_on_every_network_of_the_stack(lab: Lab) -> None:
    """The deploy's network anchor (plans.anchor): one running task per worker, attached to each
    overlay network of the registration stack, so a worker joins them one at a time."""
    manager = lab.inventory.managers[0]
    anchor = "registration_network-anchor"
    spec = json.loads(lab.nodes.run(manager, f"docker service inspect --format '{{{{json .Spec}}}}' {anchor}").stdout)
    targets = " ".join(n["Target"] for n in spec["TaskTemplate"]["Networks"])
    attached = set(lab.nodes.run(manager, f"docker network inspect --format '{{{{.Name}}}}' {targets}").stdout.split())
    stack_networks = lab.nodes.run(
        manager, "docker network ls --filter label=com.docker.stack.namespace=registration --format '{{.Name}}'"
    ).stdout.split()
    assert len(stack_networks) >= 2 and attached == set(stack_networks)
    running = lab.nodes.run(
        manager,
        f"docker service ps --filter desired-state=running --format '{{{{.Node}}}} {{{{.CurrentState}}}}' {anchor}",
    ).stdout.splitlines()
    assert sorted(line.split()[0] for line in running) == sorted(w.name for w in lab.inventory.workers)
    assert all(line.split()[1] == "Running" for line in running), running


def test_static_inventory_with_no_local_docker_engine(lab: Lab, tmp_path: Path) -> None:
    """bootstrap, status and deploy-stack through a static inventory file, DOCKER_HOST pointing nowhere.

    The mirror is spelled differently (same server), so the base image's recipe, hence its tag, is
    new: the storage node must make it itself with debootstrap, and hello is rebuilt FROM it.
    """
    document = json.loads(lab.inventory.model_dump_json()) | {"provider": "static"}
    inventory = tmp_path / "static-inventory.json"
    inventory.write_text(json.dumps(document))
    # A static target keeps its own state directory: the operator brings the cluster's CA along, or
    # the static target would make a CA of its own and re-key HAProxy and the registry.
    static_state = lab.config.state(provider="static")
    shutil.copytree(lab.state.tls, static_state.tls, dirs_exist_ok=True)
    # ...and its credentials (the admin credential is in HAProxy's configuration, as a digest).
    shutil.copy2(lab.state.credentials, static_state.credentials)
    storage = lab.inventory.storage
    assert storage is not None
    mirror = lab.config.debian_mirror.rstrip("/") + "/"
    env = {**NOWHERE, "SWARMLAB_DEBIAN_MIRROR": mirror}
    base = base_image(lab.config.debian_suite, mirror).tag
    # The lab keeps its image cache across runs (the registry's data, the storage node's engine): make
    # sure neither holds this hello nor this base yet, so the build, and the base it needs, happen here.
    lab.nodes.run(storage, f"rm -rf {REGISTRY_DATA_DIR}/docker/registry/v2/repositories/swarmlab/hello")
    lab.nodes.run(
        storage,
        f"if docker image inspect {base} >/dev/null 2>&1; then "
        f"docker tag {base} swarmlab/debian:kept-by-test && docker rmi {base} >/dev/null; fi",
    )
    boot = fab("bootstrap", "--target", str(inventory), env=env).stdout
    assert "result: no change" in boot
    status = fab("status", "--target", str(inventory), env=env).stdout
    assert "cluster citest (static)" in status and "registration_api" in status
    deploy = fab("deploy-stack", "--stack", "hello", "--target", str(inventory), env=env, timeout=900).stdout
    assert f"built {base} with debootstrap on {storage.name}" in deploy
    assert "built and pushed hello:" in deploy
    assert lab.nodes.run(storage, f"docker image inspect {base} >/dev/null", check=False).ok
    with httpx.Client(timeout=10, verify=lab.tls) as client:
        assert client.get(lab.url + "/hello/").status_code == 200
    shutil.rmtree(static_state.root)
    lab.nodes.run(storage, "docker rmi swarmlab/debian:kept-by-test >/dev/null 2>&1; true")


def test_dry_run_of_every_changing_task_changes_nothing(lab: Lab) -> None:
    for task in ("bootstrap", "haproxy", "nfs", "isolation", "build-images"):
        out = fab(task, "--dry-run").stdout
        assert "result: no change" in out, f"{task} --dry-run on a current cluster"


CACHE_LAB = {
    "SWARMLAB_CLUSTER": "citcache",
    "SWARMLAB_CIDR": "10.35.0.0/24",
    "SWARMLAB_OVERLAY_POOL": "10.135.0.0/16",
    "SWARMLAB_HTTP_PORT": "19080",
    "SWARMLAB_HTTPS_PORT": "19443",
    "SWARMLAB_SSH_PORT": "19222",
    "SWARMLAB_STATS_PORT": "19404",
    "SWARMLAB_MANAGERS": "1",
    "SWARMLAB_WORKERS": "1",
}


def test_a_new_lab_of_the_same_name_deploys_from_the_kept_image_cache(lab: Lab) -> None:
    """lab-down keeps the image cache (the registry's data, the nodes' engines); the next lab of that
    name builds nothing and its workers already hold the images. --purge removes it all."""
    engine = docker.from_env()
    cache = {"label": "swarmlab.cache=citcache"}
    try:
        fab("lab-up", env=CACHE_LAB)
        fab("bootstrap", env=CACHE_LAB)
        fab("deploy-stack", "--stack", "hello", env=CACHE_LAB)
        fab("lab-down", env=CACHE_LAB)
        assert engine.volumes.list(filters=cache), "lab-down kept the image cache"
        assert "image cache: 4 volume(s)" in fab("lab-status", env=CACHE_LAB).stdout
        fab("lab-up", env=CACHE_LAB)
        fab("bootstrap", env=CACHE_LAB)
        again = fab("deploy-stack", "--stack", "hello", env=CACHE_LAB).stdout
        assert "already in the registry" in again and "built and pushed" not in again
        assert "with debootstrap" not in again and "copied swarmlab/debian" not in again
        worker = "swarmlab-citcache-worker-1"
        images = engine.containers.get(worker).exec_run(["docker", "images", "--format", "{{.Repository}}"]).output
        assert b"/swarmlab/hello" in images
        ca = load_config(ROOT / "swarmlab.yaml", {**os.environ, **CACHE_LAB}).state(provider="lab").ca_cert
        with httpx.Client(timeout=10, verify=ssl.create_default_context(cafile=str(ca))) as client:
            assert client.get("https://127.0.0.1:19443/hello/").status_code == 200
    finally:
        fab("lab-down", "--purge", env=CACHE_LAB, check=False)
    assert engine.volumes.list(filters=cache) == []
