"""Every node's user data: valid for `cloud-init schema`, and running its role's provisioning script."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import topology
from infra.cloudinit import DATA_DEVICE_WAIT, PROVISION_PATH, volume_device
from rendering.isolation import cluster_isolation_script, isolation_dropin
from rendering.provision import daemon_json, provision_script
from tests.infra.harness import Declared, MockRun

CLOUD_INIT = shutil.which("cloud-init")


def documents(run: MockRun) -> dict[str, tuple[str, str]]:
    """Node name -> (role, user data)."""
    return {
        i.inputs["name"].removeprefix("demo-"): (i.inputs["metadata"]["swarmlab_role"], i.inputs["userData"])
        for i in run.of_kind("Instance")
    }


def files(document: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in document["write_files"]}


def test_every_node_passes_cloud_init_schema(run_3_3: MockRun, tmp_path: Path) -> None:
    if CLOUD_INIT is None:
        pytest.fail("cloud-init is missing: `make check-tools` installs it (Debian: cloud-init)")
    paths = {}
    for name, (_, text) in documents(run_3_3).items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(text)
    # A broken document must fail, or a passing run proves nothing about the validator.
    paths["broken"] = tmp_path / "broken.yaml"
    paths["broken"].write_text("#cloud-config\nruncmd: 5\nwrite_files: {path: /x}\n")
    # One process per file, all at once: each cloud-init start costs ~0.4 s of CPU.
    running = {
        name: subprocess.Popen(
            [str(CLOUD_INIT), "schema", "--config-file", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, path in paths.items()
    }
    results = {name: (proc.wait(timeout=60), proc.communicate()[0]) for name, proc in running.items()}
    broken_status, _ = results.pop("broken")
    assert broken_status != 0
    assert len(results) == 8
    for name, (status, output) in results.items():
        assert status == 0 and "Valid cloud-config" in output, f"{name}: {output}"


def test_each_node_runs_its_role_script(any_run: MockRun) -> None:
    (volume,) = any_run.of_kind("Volume")
    for name, (role, text) in documents(any_run).items():
        assert text.startswith("#cloud-config\n"), name
        document = yaml.safe_load(text)
        assert document["hostname"] == name
        assert document["disable_root"] is False and document["ssh_pwauth"] is False
        written = files(document)
        # Byte for byte the script the lab's node image of this role is built with.
        assert written[PROVISION_PATH] == provision_script(role), name
        (command,) = document["runcmd"]
        assert command[-1] == PROVISION_PATH
        if role == "storage":
            assert command == [
                "env",
                f"SWARMLAB_DATA_DEVICE={volume_device(volume.id)}",
                f"SWARMLAB_DATA_WAIT={DATA_DEVICE_WAIT}",
                PROVISION_PATH,
            ]
        else:
            assert command == [PROVISION_PATH], name


def test_daemon_json_on_docker_roles_only(run_3_3: MockRun) -> None:
    # Each node's fixed address, from the port it boots on.
    ports = {
        str(p.inputs["name"]).removeprefix("demo-").removesuffix("-port"): p.inputs["fixedIps"][0]["ipAddress"]
        for p in run_3_3.of_kind("Port")
    }
    for name, (role, text) in documents(run_3_3).items():
        written = files(yaml.safe_load(text))
        if role == "lb":
            assert "/etc/docker/daemon.json" not in written
        else:
            assert "insecure-registries" not in written["/etc/docker/daemon.json"], name
            # Swarm nodes serve engine metrics on their private address only; the storage node none.
            ip = ports[name]
            metrics = json.loads(written["/etc/docker/daemon.json"]).get("metrics-addr")
            assert metrics == (None if role == "storage" else f"{ip}:9323"), name
            assert written["/etc/docker/daemon.json"] == daemon_json(None if role == "storage" else ip), name


def test_volume_device_is_the_virtio_serial() -> None:
    # Nova gives a virtio disk the volume id, cut to 20 characters, as its serial.
    assert volume_device("0123456789abcdef0123456789") == "/dev/disk/by-id/virtio-0123456789abcdef0123"


def _declared_user_data(instance: Declared) -> str:
    return str(instance.inputs["userData"])


def test_user_data_fits_the_nova_limit(run_5_7: MockRun) -> None:
    # Nova rejects user data above 65535 bytes once base64-encoded.
    for instance in run_5_7.of_kind("Instance"):
        size = len(_declared_user_data(instance).encode())
        assert (size + 2) // 3 * 4 <= 65535, instance.name


def test_isolation_rules_on_docker_roles_before_the_engine_starts(run_3_3: MockRun) -> None:
    """Docker roles get the tenant-isolation script (the storage node's address and the node network of the
    Pulumi config) and the drop-in that runs it at each engine start, written before docker.io is installed."""
    storage = next(
        p.inputs["fixedIps"][0]["ipAddress"] for p in run_3_3.of_kind("Port") if "storage" in str(p.inputs["name"])
    )
    for name, (role, text) in documents(run_3_3).items():
        document = yaml.safe_load(text)
        written = files(document)
        if role == "lb":
            assert topology.ISOLATION_SCRIPT not in written and topology.ISOLATION_DROPIN not in written, name
            continue
        script = written[topology.ISOLATION_SCRIPT]
        cidr = ipaddress.IPv4Network(f"{storage}/24", strict=False)
        assert script == cluster_isolation_script(cidr, 1), name
        assert "--ctorigdstport 8000:8099" in script and "--ctorigdstport 9080" in script
        assert f"-d {storage}/32" in script and "--dport 22" in script and "169.254.169.254/32" in script
        assert written[topology.ISOLATION_DROPIN] == isolation_dropin(), name
        paths = [f["path"] for f in document["write_files"]]
        assert paths.index(topology.ISOLATION_DROPIN) < paths.index(PROVISION_PATH), name
