"""The redesign's promises on a real lab: a second workload bundle deploys and answers through HAProxy
next to the registration stack, the tasks reach a cluster through a static inventory with no
usable local Docker engine (the storage node then makes the Debian base image itself), and a second
lab deploys from its kept image cache and takes this lab's backup (the disaster-recovery drill)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import docker
import httpx
import pytest

from cluster.config import load_config
from cluster.images import base_image
from cluster.lab.provider import LabProvider
from cluster.runners import SshRunner
from tests.lab.conftest import ROOT, Lab, container_of, fab
from tests.lab.test_day2 import register, registration_flow, students
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
    # ...and its credentials (the admin credential is in HAProxy's configuration, as a digest), and the
    # swarm's unlock keys (else bootstrap keeps the key anew there: a change).
    shutil.copy2(lab.state.credentials, static_state.credentials)
    shutil.copy2(lab.state.unlock_keys, static_state.unlock_keys)
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
    assert f"cluster {lab.config.cluster} (static)" in status and "registration_api" in status
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


def test_a_new_lab_of_the_same_name_deploys_from_the_kept_image_cache_and_restores_this_labs_backup(
    lab: Lab, api: httpx.Client, tmp_path: Path
) -> None:
    """lab-down keeps the image cache (the registry's data, the nodes' engines); the next lab of that
    name builds nothing and its workers already hold the images. --purge removes it all.

    That second lab is also the disaster-recovery drill: a backup of the test lab (another cluster name,
    CIDR, credentials and root CA) restored into it brings the student registered here back, and the
    e-mail cannot register again there."""
    engine = docker.from_env()
    cache = {"label": "swarmlab.cache=citcache"}
    email = register(lab, api)
    directory = Path(re.findall(r"backup complete: (\S+)", fab("backup").stdout)[-1])
    other: Lab | None = None
    try:
        fab("lab-up", env=CACHE_LAB)
        fab("bootstrap", env=CACHE_LAB)
        fab("deploy-stack", "--stack", "hello", env=CACHE_LAB)
        fab("lab-down", env=CACHE_LAB)
        assert engine.volumes.list(filters=cache), "lab-down kept the image cache"
        assert "image cache: 4 volume(s)" in fab("lab-status", env=CACHE_LAB).stdout
        fab("lab-up", env=CACHE_LAB)
        fab("bootstrap", env=CACHE_LAB)
        again = fab("build-images", "--stack", "hello", env=CACHE_LAB).stdout
        assert "already in the registry" in again and "result: no change" in again
        worker = "swarmlab-citcache-worker-1"
        images = engine.containers.get(worker).exec_run(["docker", "images", "--format", "{{.Repository}}"]).output
        assert b"/swarmlab/hello" in images
        # ui and api publish host-mode ports: one task a worker. The lab values' 3 are refused at once.
        refused = fab("deploy-stack", env=CACHE_LAB, check=False)
        assert refused.returncode == 1 and "ui: replicas 3, but it publishes port" in refused.stderr, refused.stderr
        one_worker = tmp_path / "one-worker.yaml"
        one_worker.write_text("edge_replicas: 1\nbroker_replicas: 1\n")
        # The registration stack, nobody registered: its images are copied from the machine's cache, not built.
        deployed = fab("deploy-stack", "--values", str(one_worker), env=CACHE_LAB).stdout
        assert "built and pushed" not in deployed and "with debootstrap" not in deployed
        other = other_lab(CACHE_LAB)
        restored = fab("restore", "--from", str(directory), env=CACHE_LAB).stdout
        assert f"restoring a backup of cluster {lab.config.cluster} into cluster citcache" in restored
        assert "registration/database restored" in restored and "result: changed" in restored
        assert email in students(other), "the student registered on the test lab is in the other cluster"
        assert register_again(other, email) == 409
    finally:
        if other is not None:
            other.nodes.close()
        fab("lab-down", "--purge", env=CACHE_LAB, check=False)
        shutil.rmtree(directory, ignore_errors=True)
    assert engine.volumes.list(filters=cache) == []


def other_lab(env: dict[str, str]) -> Lab:
    config = load_config(ROOT / "swarmlab.yaml", {**os.environ, **env})
    inventory = LabProvider().inventory(config, "lab")
    return Lab(config, inventory, SshRunner(inventory))


def register_again(other: Lab, email: str) -> int:
    """The whole registration flow for an e-mail on another lab, with that lab's credentials: the status
    of the final `register`."""
    credentials = json.loads(other.state.credentials.read_text())
    with httpx.Client(
        base_url=other.url + "/api", auth=("api", credentials["api_password"]), timeout=50, verify=other.tls
    ) as client:
        listed = client.post(
            "/create_email_list", json={"email_list": [email]}, auth=("admin", credentials["admin_password"])
        )
        assert listed.status_code == 200 and listed.json()["results"]["added"] == 0, listed.text  # restored too
        return registration_flow(other, client, email).status_code
