"""The inventory output is the contract with the Fabric tasks: it must parse with the loader they use
(`fab bootstrap --target pulumi` reads `pulumi stack output inventory --json`), describe the nodes the
config asked for, and have the same shape as the lab's inventory."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

import topology
from cluster.config import Config
from cluster.inventory import Role, parse_inventory
from cluster.lab.layout import lab_inventory
from cluster.state import StatePaths
from tests.infra.harness import FLOATING_IP, MockRun, inventory_json

SHAPES = [("run_3_3", 3, 3), ("run_5_7", 5, 7)]


@pytest.mark.parametrize(("fixture", "managers", "workers"), SHAPES)
def test_inventory_parses_and_has_the_nodes_asked_for(
    request: pytest.FixtureRequest, fixture: str, managers: int, workers: int
) -> None:
    run: MockRun = request.getfixturevalue(fixture)
    inventory = parse_inventory(inventory_json(run), "pulumi stack output inventory")
    assert inventory.provider == "openstack" and inventory.cluster == "demo"
    assert len(inventory.managers) == managers and len(inventory.workers) == workers
    assert inventory.lb.name == "lb-1" and inventory.lb.public_ip == ipaddress.IPv4Address(FLOATING_IP)
    assert inventory.storage is not None and inventory.storage.private_ip == ipaddress.IPv4Address("10.20.0.6")
    assert [n.public_ip for n in inventory.nodes if n.role is not Role.LB] == [None] * (managers + workers + 1)
    assert inventory.ssh.jump_host == "lb-1" and inventory.ssh.user == "root" and inventory.ssh.port == 22
    assert inventory.ssh.private_key == "~/.ssh/id_ed25519"
    assert inventory.endpoints.http == f"https://{FLOATING_IP}"
    assert inventory.endpoints.registry == "10.20.0.6:5000"
    assert inventory.endpoints.nfs == "10.20.0.6:/data"


@pytest.mark.parametrize(("fixture", "managers", "workers"), SHAPES)
def test_inventory_addresses_are_the_ports_addresses(
    request: pytest.FixtureRequest, fixture: str, managers: int, workers: int
) -> None:
    run: MockRun = request.getfixturevalue(fixture)
    inventory = parse_inventory(inventory_json(run))
    declared = {}
    for instance in run.of_kind("Instance"):
        port = run.by_id(instance.inputs["networks"][0]["port"])
        declared[instance.inputs["name"].removeprefix("demo-")] = port.inputs["fixedIps"][0]["ipAddress"]
    assert {n.name: str(n.private_ip) for n in inventory.nodes} == declared
    assert len(declared) == managers + workers + 2


def test_inventory_endpoints_are_the_storage_nodes_as_in_the_lab(run_3_3: MockRun) -> None:
    # The NFS endpoint is the storage node's export, the one the deployer mounts; no other kind exists.
    endpoints = run_3_3.outputs["inventory"]["endpoints"]
    cidr = ipaddress.IPv4Network("10.20.0.0/24")
    assert endpoints["nfs"] == topology.nfs_endpoint(cidr)
    assert endpoints["registry"] == topology.registry_endpoint(cidr)
    assert endpoints["stats"] == f"http://{FLOATING_IP}:{topology.STATS_PORT}/stats"
    lab = lab_inventory(Config(), StatePaths(Path("/state")))  # the same 10.20.0.0/24 by default
    assert lab.network.cidr == cidr
    assert (lab.endpoints.nfs, lab.endpoints.registry) == (endpoints["nfs"], endpoints["registry"])


def _shape(value: Any) -> Any:
    """Keys all the way down, values replaced by their JSON type."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return "string" if isinstance(value, str) else type(value).__name__


def test_inventory_has_the_shape_of_the_lab_inventory(run_3_3: MockRun) -> None:
    lab = json.loads(lab_inventory(Config(), StatePaths(Path("/state"))).model_dump_json())
    ours = json.loads(inventory_json(run_3_3))
    assert ours.keys() == lab.keys()
    assert ours["ssh"].keys() == lab["ssh"].keys()
    assert ours["endpoints"].keys() == lab["endpoints"].keys()
    assert _shape(ours["nodes"]) == _shape(lab["nodes"])  # the first node (lb-1) in both, with a public_ip
    assert _shape(ours["network"]) == _shape(lab["network"])


def test_ssh_config_uses_the_lb_node_as_proxy_jump(run_3_3: MockRun) -> None:
    blocks = {}
    for block in run_3_3.outputs["ssh_config"].split("Host ")[1:]:
        name, *lines = block.strip().splitlines()
        blocks[name] = dict(line.strip().split(" ", 1) for line in lines)
    assert set(blocks) == {f"demo-{n}" for n in ("lb-1", "storage-1")} | {
        f"demo-{role}-{i}" for role in ("manager", "worker") for i in (1, 2, 3)
    }
    assert blocks["demo-lb-1"]["HostName"] == FLOATING_IP and "ProxyJump" not in blocks["demo-lb-1"]
    for name, options in blocks.items():
        assert options["User"] == "root" and options["IdentityFile"] == "~/.ssh/id_ed25519"
        if name != "demo-lb-1":
            assert options["ProxyJump"] == "demo-lb-1"
            assert ipaddress.IPv4Address(options["HostName"]) in ipaddress.IPv4Network("10.20.0.0/24")
