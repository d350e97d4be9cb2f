"""Security policy, read back from the declared SecGroupRules and the groups on each node's port.

The expected table below is the policy in the issue, row for row: a rule that is missing fails, and so
does any rule that is not in it ("nothing else open").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest

from tests.infra.harness import MockRun, run_config

ADMIN = "198.51.100.0/24"  # tests/infra/harness.py BASE_CONFIG
CLUSTER = "10.20.0.0/24"
WORLD = "0.0.0.0/0"
LB = "group:lb"
WORKERS = "group:workers"
SWARM = {("tcp", 2377, 2377), ("tcp", 7946, 7946), ("udp", 7946, 7946), ("udp", 4789, 4789)}
# Docker engine metrics (daemon.json's metrics-addr, the node's private address): the cluster only.
ENGINE_METRICS = ("tcp", 9323, 9323)


@dataclass(frozen=True)
class Allow:
    protocol: str | None
    low: int | None
    high: int | None
    source: str


def _allow(protocol: str | None, low: int | None, high: int | None, source: str) -> Allow:
    return Allow(protocol, low, high, source)


EXPECTED: dict[str, set[Allow]] = {
    "lb": {
        _allow("tcp", 22, 22, ADMIN),
        _allow("tcp", 80, 80, WORLD),
        _allow("tcp", 443, 443, WORLD),
        _allow("tcp", 8404, 8404, ADMIN),
        _allow("tcp", 8405, 8405, CLUSTER),  # HAProxy's Prometheus exporter, on its private address
    },
    # 9080: the cluster map (a container on each manager), for HAProxy only.
    "manager": {_allow("tcp", 22, 22, LB), _allow("tcp", 9080, 9080, LB)}
    | {_allow(p, lo, hi, CLUSTER) for p, lo, hi in {*SWARM, ENGINE_METRICS}},
    # ESP (IP protocol 50) between workers: the prod values' encrypted overlays (overlay_encryption, default on).
    "worker": {_allow("tcp", 22, 22, LB), _allow("tcp", 8000, 8099, LB), _allow("esp", None, None, WORKERS)}
    | {_allow(p, lo, hi, CLUSTER) for p, lo, hi in {*SWARM, ENGINE_METRICS}},
    "storage": {_allow("tcp", 22, 22, LB), _allow("tcp", 2049, 2049, WORKERS), _allow("tcp", 5000, 5000, CLUSTER)},
}


@dataclass(frozen=True)
class Policy:
    """Ingress per role and egress per role, as the cloud would enforce them."""

    ingress: dict[str, set[Allow]]
    egress: dict[str, set[Allow]]
    default_rules_deleted: bool


def _number(value: Any) -> int | None:
    # Numbers come back from the wire as floats.
    return None if value is None else int(value)


def read_policy(run: MockRun) -> Policy:
    groups = {g.id: g.inputs["name"].removeprefix("demo-") for g in run.of_kind("SecGroup")}
    rules: dict[str, set[tuple[str, Allow]]] = {group: set() for group in groups.values()}
    for rule in run.of_kind("SecGroupRule"):
        i = rule.inputs
        assert i["ethertype"] == "IPv4"
        source = f"group:{groups[i['remoteGroupId']]}" if "remoteGroupId" in i else i["remoteIpPrefix"]
        allow = Allow(i.get("protocol"), _number(i.get("portRangeMin")), _number(i.get("portRangeMax")), source)
        rules[groups[i["securityGroupId"]]].add((i["direction"], allow))
    ingress: dict[str, set[Allow]] = {}
    egress: dict[str, set[Allow]] = {}
    for instance in run.of_kind("Instance"):
        role = instance.inputs["metadata"]["swarmlab_role"]
        port = run.by_id(instance.inputs["networks"][0]["port"])
        on_port = set().union(*(rules[groups[g]] for g in port.inputs["securityGroupIds"]))
        node_in = {a for d, a in on_port if d == "ingress"}
        # Every node of a role must carry the same policy.
        assert ingress.setdefault(role, node_in) == node_in, instance.name
        egress[role] = {a for d, a in on_port if d == "egress"}
    deleted = all(g.inputs.get("deleteDefaultRules") is True for g in run.of_kind("SecGroup"))
    return Policy(ingress, egress, deleted)


def opens(allow: Allow, protocol: str, port: int) -> bool:
    if allow.protocol is None:
        return True
    if allow.protocol != protocol:
        return False
    return allow.low is None or (allow.low <= port <= (allow.high or allow.low))


def from_everywhere(allow: Allow) -> bool:
    return not allow.source.startswith("group:") and ipaddress.ip_network(allow.source).prefixlen == 0


@pytest.fixture(scope="module")
def policy(run_3_3: MockRun) -> Policy:
    return read_policy(run_3_3)


def test_policy_table_is_exactly_the_expected_one(policy: Policy) -> None:
    assert policy.ingress == EXPECTED


def test_same_policy_with_more_nodes(run_5_7: MockRun, policy: Policy) -> None:
    assert read_policy(run_5_7).ingress == policy.ingress


def test_default_rules_are_deleted(policy: Policy) -> None:
    # Otherwise OpenStack adds its own rules, which no table here would show.
    assert policy.default_rules_deleted


@pytest.mark.parametrize(
    ("protocol", "port"),
    [
        *[("tcp", 22), ("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789), ("tcp", 2049), ("tcp", 5000)],
        *[("tcp", 8404), ("tcp", 8000), ("tcp", 8050), ("tcp", 8099)],
    ],
)
def test_no_private_port_reachable_from_everywhere(policy: Policy, protocol: str, port: int) -> None:
    for role, allows in policy.ingress.items():
        exposed = [a for a in allows if opens(a, protocol, port) and from_everywhere(a)]
        assert not exposed, f"{role}: {protocol}/{port} is open to the world: {exposed}"


def test_only_http_and_https_on_the_lb_node_are_public(policy: Policy) -> None:
    public = {(role, a) for role, allows in policy.ingress.items() for a in allows if from_everywhere(a)}
    assert public == {("lb", _allow("tcp", 80, 80, WORLD)), ("lb", _allow("tcp", 443, 443, WORLD))}
    assert all(a.protocol is not None for allows in policy.ingress.values() for a in allows), "an any-protocol rule"


def test_ssh_to_private_nodes_only_from_the_lb_group(policy: Policy) -> None:
    for role in ("manager", "worker", "storage"):
        assert {a.source for a in policy.ingress[role] if opens(a, "tcp", 22)} == {LB}, role
    assert {a.source for a in policy.ingress["lb"] if opens(a, "tcp", 22)} == {ADMIN}


def test_swarm_ports_only_from_the_cluster_subnet(policy: Policy) -> None:
    for role in ("manager", "worker"):
        swarm = {a for a in policy.ingress[role] if (a.protocol, a.low, a.high) in SWARM}
        assert {(a.protocol, a.low, a.high) for a in swarm} == SWARM, role
        assert {a.source for a in swarm} == {CLUSTER}, role


def test_every_node_can_reach_out(policy: Policy) -> None:
    # apt and image pulls at first boot; stateful groups let the replies back in.
    for role, allows in policy.egress.items():
        assert _allow(None, None, None, WORLD) in allows, role


def test_admin_and_public_cidrs_follow_the_config() -> None:
    run = run_config({"admin_cidrs": '["192.0.2.7/32", "198.51.100.0/24"]', "public_cidrs": "192.0.2.0/24"})
    lb = read_policy(run).ingress["lb"]
    assert {a.source for a in lb if opens(a, "tcp", 22)} == {"192.0.2.7/32", "198.51.100.0/24"}
    assert {a.source for a in lb if opens(a, "tcp", 8404)} == {"192.0.2.7/32", "198.51.100.0/24"}
    assert {a.source for a in lb if opens(a, "tcp", 443)} == {"192.0.2.0/24"}
    assert not any(from_everywhere(a) for a in lb)


def test_esp_is_open_between_workers_only_and_closed_without_overlay_encryption(run_3_3: MockRun) -> None:
    esp = [r for r in run_3_3.of_kind("SecGroupRule") if r.inputs.get("protocol") == "esp"]
    assert len(esp) == 1 and esp[0].inputs.get("direction") == "ingress"
    assert esp[0].inputs.get("remoteGroupId") and not esp[0].inputs.get("remoteIpPrefix")
    closed = run_config({"overlay_encryption": "false"})
    assert not [r.name for r in closed.of_kind("SecGroupRule") if r.inputs.get("protocol") == "esp"]
    assert read_policy(closed).ingress == {
        **EXPECTED,
        "worker": EXPECTED["worker"] - {_allow("esp", None, None, WORKERS)},
    }


def test_two_lbs_add_vrrp_from_the_lb_group_and_nothing_else(run_two_lbs: MockRun, policy: Policy) -> None:
    two = read_policy(run_two_lbs)
    assert two.ingress == {**EXPECTED, "lb": EXPECTED["lb"] | {_allow("112", None, None, LB)}}
    assert two.egress == policy.egress
