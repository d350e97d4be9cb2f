"""The redesign's promises on a real lab: a second workload bundle deploys and answers through HAProxy
next to the registration stack, and the tasks reach a cluster through a static inventory with no
usable local Docker engine (the storage node then makes the Debian base image itself)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cluster.images import base_image
from tests.lab.conftest import Lab, fab

pytestmark = pytest.mark.lab
NOWHERE = {"DOCKER_HOST": "tcp://127.0.0.1:9"}  # the discard port: no Docker engine answers there


def test_a_second_bundle_answers_next_to_the_registration_stack(lab: Lab) -> None:
    out = fab("deploy-stack", "--stack", "hello").stdout
    assert "stack hello deployed" in out or "the deployed stack equals the rendered one" in out
    served_by = set()
    with httpx.Client(timeout=10) as client:
        # Every hello replica (one per worker), not just the first answer.
        for _ in range(30):
            response = client.get(lab.url + "/hello/")
            assert response.status_code == 200 and "Hello from" in response.text
            served_by.add(response.headers["X-Served-By"])
            if len(served_by) == len(lab.inventory.workers):
                break
        assert len(served_by) == len(lab.inventory.workers), served_by
        ui = client.get(lab.url + "/")
        assert ui.status_code == 200 and "Hello from" not in ui.text, "the registration UI still owns /"
        assert client.get(lab.url + "/api/docs").status_code in (200, 401)
    again = fab("deploy-stack", "--stack", "hello").stdout
    assert "result: no change" in again


def test_static_inventory_with_no_local_docker_engine(lab: Lab, tmp_path: Path) -> None:
    """bootstrap, status and deploy-stack through a static inventory file, DOCKER_HOST pointing nowhere."""
    document = json.loads(lab.inventory.model_dump_json()) | {"provider": "static"}
    inventory = tmp_path / "static-inventory.json"
    inventory.write_text(json.dumps(document))
    storage = lab.inventory.storage
    assert storage is not None
    base = base_image(lab.config.debian_suite, lab.config.debian_mirror).tag
    # Keep the image under another name (images built FROM it depend on it), so that the base tag is
    # gone and the static path must make it on the storage node itself.
    lab.nodes.run(storage, f"docker tag {base} swarmlab/debian:kept-by-test && docker rmi {base} >/dev/null")
    try:
        boot = fab("bootstrap", "--target", str(inventory), env=NOWHERE).stdout
        assert "result: no change" in boot
        status = fab("status", "--target", str(inventory), env=NOWHERE).stdout
        assert "cluster citest (static)" in status and "registration_api" in status
        deploy = fab("deploy-stack", "--target", str(inventory), env=NOWHERE, timeout=900).stdout
        assert f"built {base} with debootstrap on {storage.name}" in deploy
        assert "built and pushed" not in deploy, "the app images depend on the base's recipe, not its bytes"
        assert lab.nodes.run(storage, f"docker image inspect {base} >/dev/null", check=False).ok
    finally:
        lab.nodes.run(storage, "docker rmi swarmlab/debian:kept-by-test >/dev/null", check=False)


def test_dry_run_of_every_changing_task_changes_nothing(lab: Lab) -> None:
    for task in ("bootstrap", "haproxy", "nfs", "build-images"):
        out = fab(task, "--dry-run").stdout
        assert "result: no change" in out, f"{task} --dry-run on a current cluster"
