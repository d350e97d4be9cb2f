"""Inventory schema v1: the lab writes what the loader reads back; bad inventories are refused."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

import topology
from cluster.config import parse_config
from cluster.errors import ConfigErrors
from cluster.inventory import Role, dump_inventory, parse_inventory
from cluster.lab.layout import lab_inventory
from cluster.state import StatePaths


def lab(**overrides: object) -> str:
    return dump_inventory(lab_inventory(parse_config(overrides), StatePaths(Path("/state"))))


def test_lab_inventory_round_trips_through_the_loader() -> None:
    inventory = parse_inventory(lab())
    assert [n.name for n in inventory.managers] == ["manager-1", "manager-2", "manager-3"]
    assert [str(n.private_ip) for n in inventory.workers] == ["10.20.0.21", "10.20.0.22", "10.20.0.23"]
    assert inventory.lb.public_ip is not None and str(inventory.lb.public_ip) == "127.0.0.1"
    assert all(n.public_ip is None for n in inventory.nodes if n.role is not Role.LB)
    assert inventory.ssh.jump_host == "lb-1" and inventory.ssh.jump_port == 2222
    assert inventory.endpoints.registry == "10.20.0.6:5000"


def test_lab_inventory_follows_the_config() -> None:
    inventory = parse_inventory(lab(managers=5, workers=7, cidr="10.40.0.0/24"))
    assert (len(inventory.managers), len(inventory.workers)) == (5, 7)
    assert all(str(n.private_ip).startswith("10.40.0.") for n in inventory.nodes)


def mutate(change: dict[str, object]) -> str:
    data = json.loads(lab())
    data.update(change)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"version": 2}, "version"),
        ({"provider": "aws"}, "provider"),
        ({"nodes": []}, "managers"),
        ({"network": {"cidr": "10.99.0.0/24"}}, "outside"),
        # The cluster names a state directory on this machine: no path may hide in it.
        ({"cluster": "../../.ssh"}, "cluster"),
    ],
)
def test_invalid_inventories_are_refused_with_the_key(change: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_inventory(mutate(change), "inventory.json")
    assert expected in str(caught.value)
    assert "inventory.json" in str(caught.value)


def test_even_manager_count_in_a_static_inventory_is_refused() -> None:
    data = json.loads(lab())
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "manager-3"]
    with pytest.raises(ConfigErrors, match="2 managers"):
        parse_inventory(json.dumps(data))


def test_not_json_is_refused() -> None:
    with pytest.raises(ConfigErrors, match="not JSON"):
        parse_inventory("{", "static.json")


def test_host_keys_are_public_keys_of_known_nodes() -> None:
    data = json.loads(lab())
    data["ssh"]["host_keys"] = {
        "lb-1": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEbHm3kqWmBP5lbhdpiOkDLYqvl1yPhJpuNhO0t1j4j8"
    }
    assert parse_inventory(json.dumps(data)).ssh.host_keys["lb-1"].startswith("ssh-ed25519 ")
    data["ssh"]["host_keys"] = {"lb-1": "-----BEGIN OPENSSH PRIVATE KEY-----"}
    with pytest.raises(ConfigErrors, match=r"ssh.host_keys.lb-1"):
        parse_inventory(json.dumps(data))
    data["ssh"]["host_keys"] = {"lb-9": "ssh-ed25519 AAAA"}
    with pytest.raises(ConfigErrors, match="lb-9"):
        parse_inventory(json.dumps(data))


def with_change(path: tuple[str | int, ...], value: object) -> str:
    data = json.loads(lab())
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("path", "value", "key", "fix"),
    [
        # Each of these goes into a command run as root on a node: refused before any connection.
        (("nodes", 0, "name"), "w1; rm -rf /", "nodes.0.name", "name the node like worker-1"),
        (("nodes", 0, "name"), "$(reboot)", "nodes.0.name", "name the node like worker-1"),
        (("nodes", 0, "name"), "-x", "nodes.0.name", "name the node like worker-1"),
        (("cluster",), "demo`id`", "cluster", "such as demo"),
        (("endpoints", "registry"), "10.20.0.6:5000 --insecure", "endpoints.registry", "10.20.0.6:5000"),
        (("endpoints", "registry"), "10.20.0.6", "endpoints.registry", "10.20.0.6:5000"),
        (("endpoints", "registry"), "reg$(id):5000", "endpoints.registry", "10.20.0.6:5000"),
        (("endpoints", "registry"), "10.20.0.6:70000", "endpoints.registry", "10.20.0.6:5000"),
        (("endpoints", "nfs"), "10.20.0.6:/data;reboot", "endpoints.nfs", "10.20.0.6:/data"),
        (("ssh", "user"), "root -oProxyCommand=x", "ssh.user", "root or debian"),
    ],
)
def test_names_and_endpoints_that_would_reach_a_root_shell_are_refused(
    path: tuple[str | int, ...], value: str, key: str, fix: str
) -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_inventory(with_change(path, value), "inventory.json")
    message = str(caught.value)
    assert f"inventory.json: {key}" in message and value in message and fix in message, message


def test_good_names_and_endpoints_still_load() -> None:
    assert parse_inventory(with_change(("endpoints", "registry"), "registry.example.org:5000")).registry == (
        "registry.example.org:5000"
    )
    assert str(parse_inventory(with_change(("endpoints", "nfs"), "nfs-1.example.org:/srv/data_1")).nfs) == (
        "nfs-1.example.org:/srv/data_1"
    )


def two_lbs(vip: str | None = "10.20.0.4") -> dict[str, Any]:
    """An inventory of two lbs as topology writes it (the Pulumi program's, with lb_count 2)."""
    cidr = ipaddress.IPv4Network("10.20.0.0/24")
    return topology.inventory_document(
        cluster="demo",
        provider="openstack",
        cidr=cidr,
        nodes=topology.plan_nodes(cidr, 3, 3, lbs=2),
        ssh={"user": "root", "private_key": "~/.ssh/id_ed25519"},
        lb_public_ip="203.0.113.10",
        http="https://203.0.113.10",
        stats="http://203.0.113.10:8404/stats",
        vip=vip,
    )


def test_two_lbs_with_their_virtual_ip_load() -> None:
    inventory = parse_inventory(json.dumps(two_lbs()))
    assert [(n.name, str(n.private_ip)) for n in inventory.lbs] == [("lb-1", "10.20.0.5"), ("lb-2", "10.20.0.7")]
    assert str(inventory.network.vip) == "10.20.0.4"
    # Both are reached at the VIP's public address (whichever holds it answers); lb-1 stays the jump host.
    assert {str(n.public_ip) for n in inventory.lbs} == {"203.0.113.10"}
    assert inventory.lb.name == "lb-1" and inventory.ssh.jump_host == "lb-1"
    assert json.loads(dump_inventory(inventory))["network"] == {"cidr": "10.20.0.0/24", "vip": "10.20.0.4"}


def test_one_lb_writes_no_vip_key() -> None:
    # Byte for byte what it was before two lbs existed: the network holds the cidr alone.
    assert json.loads(lab())["network"] == {"cidr": "10.20.0.0/24"}
    assert parse_inventory(lab()).lbs == (parse_inventory(lab()).lb,)


@pytest.mark.parametrize(
    ("vip", "problem", "fix"),
    [
        (None, "none is given", "set network.vip to a free address of 10.20.0.0/24, such as 10.20.0.4"),
        ("10.99.0.4", "outside 10.20.0.0/24", "pick a free address"),
        ("10.20.0.7", "lb-2's own address", "pick an address no node has"),
    ],
)
def test_two_lbs_need_a_free_virtual_ip_of_the_network(vip: str | None, problem: str, fix: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_inventory(json.dumps(two_lbs(vip)), "inventory.json")
    [error] = caught.value.errors
    assert error.key == "inventory.json: network.vip" and problem in error.problem and error.fix.startswith(fix)
    assert error.value == vip


def test_a_virtual_ip_with_one_lb_is_refused() -> None:
    data = json.loads(lab())
    data["network"]["vip"] = "10.20.0.4"
    with pytest.raises(ConfigErrors, match="needs two lb nodes"):
        parse_inventory(json.dumps(data))


def test_three_lbs_are_refused_with_the_supported_counts() -> None:
    data = two_lbs()
    data["nodes"].append({"name": "lb-3", "role": "lb", "private_ip": "10.20.0.8", "public_ip": None})
    with pytest.raises(ConfigErrors, match="3 lb nodes: must be 1 or 2"):
        parse_inventory(json.dumps(data))
