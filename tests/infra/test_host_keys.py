"""Cloud host keys, pinned before the servers exist: every node gets its own ed25519 key (a secret in
the stack's state), cloud-init installs it as the only host key, the inventory and the known_hosts
output carry the matching public keys, and no private key reaches a plain output."""

from __future__ import annotations

import json
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization

from cluster.inventory import parse_inventory
from cluster.runners import SshRunner
from infra.cloudinit import HOST_KEY_PATH
from tests.infra.harness import FLOATING_IP, MockRun, inventory_json


def public_of(private_openssh: str) -> str:
    key = serialization.load_ssh_private_key(private_openssh.encode(), None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def cloud_configs(run: MockRun) -> dict[str, dict[str, Any]]:
    return {
        i.inputs["name"].removeprefix("demo-"): yaml.safe_load(i.inputs["userData"]) for i in run.of_kind("Instance")
    }


def test_every_node_gets_its_own_ed25519_host_key_kept_secret(any_run: MockRun) -> None:
    nodes = {n["name"] for n in any_run.outputs["inventory"]["nodes"]}
    keys = any_run.of_kind("PrivateKey")
    assert {k.name for k in keys} == {f"{name}-host-key" for name in nodes}
    for key in keys:
        assert key.inputs["algorithm"] == "ED25519"
        assert "privateKeyOpenssh" in key.secret_outputs, "the private key must be a secret in the stack's state"
        assert "HostKeys" in key.parent
    assert len(set(any_run.private_keys)) == len(nodes)


def test_cloud_init_installs_the_key_the_inventory_pins(any_run: MockRun) -> None:
    pinned = any_run.outputs["inventory"]["ssh"]["host_keys"]
    configs = cloud_configs(any_run)
    assert set(pinned) == set(configs)
    for name, document in configs.items():
        keys = document["ssh_keys"]
        assert public_of(keys["ed25519_private"]) == keys["ed25519_public"] == pinned[name], name
        assert document["ssh_deletekeys"] is True and document["ssh_genkeytypes"] == ["ed25519"]
        files = {f["path"]: f["content"] for f in document["write_files"]}
        drop_in = files["/etc/ssh/sshd_config.d/05-hostkey.conf"]
        assert drop_in.strip() == f"HostKey {HOST_KEY_PATH}", name


def test_user_data_is_a_secret_input(any_run: MockRun) -> None:
    for instance in any_run.of_kind("Instance"):
        assert "userData" in instance.secret_inputs, instance.name


def test_no_private_key_in_any_plain_output(any_run: MockRun) -> None:
    plain = json.dumps(any_run.outputs)
    assert "PRIVATE KEY" not in plain
    for private in any_run.private_keys:
        body = private.splitlines()[1]  # a line of the key's base64 body
        assert body not in plain
    for resource in any_run.resources:
        if resource.kind != "Instance":
            assert "PRIVATE KEY" not in json.dumps(resource.inputs), resource.name


def test_known_hosts_output_matches_the_inventory(run_3_3: MockRun) -> None:
    inventory = run_3_3.outputs["inventory"]
    lines = dict(line.split(" ", 1) for line in run_3_3.outputs["known_hosts"].splitlines())
    for node in inventory["nodes"]:
        address = FLOATING_IP if node["role"] == "lb" else node["private_ip"]
        assert lines[address] == inventory["ssh"]["host_keys"][node["name"]]
    assert len(lines) == len(inventory["nodes"])
    assert "StrictHostKeyChecking yes" in run_3_3.outputs["ssh_config"]


def test_the_runner_accepts_the_pulumi_inventory_as_pinned(run_3_3: MockRun) -> None:
    # No known_hosts file: the inventory's host keys are the pins (an unpinned inventory is refused).
    inventory = parse_inventory(inventory_json(run_3_3), "pulumi stack output inventory")
    assert inventory.ssh.known_hosts is None and len(inventory.ssh.host_keys) == len(inventory.nodes)
    SshRunner(inventory).close()
