"""lb_count 2 under mocks: two lb instances in an anti-affinity group, a VIP port holding the floating IP,
the VIP allowed on both lb ports, VRRP open between the lbs only, and an inventory naming both and the VIP.
Each test checks the values that make it work, not only that a resource exists."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster.inventory import parse_inventory
from infra.config import InfraConfigError, parse_config
from keepalived.model import build, render_config
from rendering.provision import provision_script
from tests.infra.harness import FLOATING_IP, SSH_FLOATING_IPS, Declared, MockRun, inventory_json, run_config

VIP = "10.20.0.4"


def instances(run: MockRun, role: str) -> list[Declared]:
    return sorted(
        (i for i in run.of_kind("Instance") if i.inputs["metadata"]["swarmlab_role"] == role),
        key=lambda i: str(i.inputs["name"]),
    )


def port_of(run: MockRun, instance: Declared) -> Declared:
    return run.by_id(instance.inputs["networks"][0]["port"])


def vip_port(run: MockRun) -> Declared:
    return run.one("Port", "vip-port")


def group_named(run: MockRun, name: str) -> Declared:
    [group] = [g for g in run.of_kind("SecGroup") if g.inputs["name"] == name]
    return group


def test_two_lb_instances_at_their_fixed_addresses(run_two_lbs: MockRun) -> None:
    lbs = instances(run_two_lbs, "lb")
    assert [i.inputs["name"] for i in lbs] == ["demo-lb-1", "demo-lb-2"]
    assert [port_of(run_two_lbs, i).inputs["fixedIps"][0]["ipAddress"] for i in lbs] == ["10.20.0.5", "10.20.0.7"]
    # Nothing else changes shape: the storage node and the swarm nodes are as with one lb.
    assert [len(instances(run_two_lbs, r)) for r in ("storage", "manager", "worker")] == [1, 3, 3]


@pytest.mark.parametrize("policy", ["anti-affinity", "soft-anti-affinity"])
def test_both_lbs_are_scheduled_in_one_group_of_the_configured_policy(policy: str, run_two_lbs: MockRun) -> None:
    run = run_two_lbs if policy == "anti-affinity" else run_config({"lb_count": "2", "server_group_policy": policy})
    [group] = [g for g in run.of_kind("ServerGroup") if g.inputs["name"] == "demo-lbs"]
    assert group.inputs["policies"] == policy
    for instance in instances(run, "lb"):
        assert instance.inputs["schedulerHints"] == [{"group": group.id}], instance.name
    # The managers' and workers' groups are their own: no lb is in them.
    others = {g.id for g in run.of_kind("ServerGroup")} - {group.id}
    assert len(others) == 2
    assert all(
        i.inputs["schedulerHints"][0]["group"] in others for r in ("manager", "worker") for i in instances(run, r)
    )


def test_the_vip_port_is_unbound_and_holds_the_vip_in_the_subnet(run_two_lbs: MockRun) -> None:
    port = vip_port(run_two_lbs)
    [subnet] = run_two_lbs.of_kind("Subnet")
    assert port.inputs["fixedIps"] == [{"subnetId": subnet.id, "ipAddress": VIP}]
    assert ipaddress.IPv4Address(VIP) in ipaddress.IPv4Network(subnet.inputs["cidr"])
    assert port.inputs["networkId"] == run_two_lbs.of_kind("Network")[0].id
    # Unbound: no instance boots on it (it reserves the address; keepalived puts it on an lb's own port).
    assert all(i.inputs["networks"][0]["port"] != port.id for i in run_two_lbs.of_kind("Instance"))
    # Below DHCP's pool, so Neutron never hands it to another port.
    assert ipaddress.IPv4Address(VIP) < ipaddress.IPv4Address(subnet.inputs["allocationPools"][0]["start"])


def test_both_lb_ports_allow_the_vip_and_no_other_port_does(run_two_lbs: MockRun) -> None:
    vip = vip_port(run_two_lbs).inputs["fixedIps"][0]["ipAddress"]
    lb_ports = {port_of(run_two_lbs, i).id for i in instances(run_two_lbs, "lb")}
    assert len(lb_ports) == 2
    for port in run_two_lbs.of_kind("Port"):
        pairs = port.inputs.get("allowedAddressPairs")
        if port.id in lb_ports:
            # The pair's address is the VIP port's own, as a single address (what ML2/OVN needs).
            assert pairs == [{"ipAddress": vip}], port.name
        else:
            assert pairs is None, port.name


def test_the_vip_floating_ip_is_on_the_vip_port_and_each_lb_has_one_of_its_own(run_two_lbs: MockRun) -> None:
    """The VIP's floating IP (HTTP(S)) follows the VIP; each lb's own (SSH) is on its port."""
    associations = {a.inputs["floatingIp"]: a.inputs["portId"] for a in run_two_lbs.of_kind("FloatingIpAssociate")}
    ports = {p.id: p.name for p in run_two_lbs.of_kind("Port")}
    assert {address: ports[port] for address, port in associations.items()} == {
        FLOATING_IP: "vip-port",
        SSH_FLOATING_IPS["lb-1-ssh"]: "lb-1-port",
        SSH_FLOATING_IPS["lb-2-ssh"]: "lb-2-port",
    }
    assert {f.inputs["pool"] for f in run_two_lbs.of_kind("FloatingIp")} == {"public"}
    config = run_two_lbs.outputs["ssh_config"]
    assert f"HostName {SSH_FLOATING_IPS['lb-2-ssh']}" in config and f"HostName {FLOATING_IP}" not in config


def test_vrrp_is_open_between_the_lbs_only(run_two_lbs: MockRun) -> None:
    lb_group = group_named(run_two_lbs, "demo-lb")
    vrrp = [r for r in run_two_lbs.of_kind("SecGroupRule") if r.inputs.get("protocol") == "112"]
    [rule] = vrrp
    assert rule.inputs["securityGroupId"] == lb_group.id
    assert rule.inputs["remoteGroupId"] == lb_group.id and "remoteIpPrefix" not in rule.inputs
    assert rule.inputs["direction"] == "ingress" and rule.inputs["ethertype"] == "IPv4"
    assert "portRangeMin" not in rule.inputs and "portRangeMax" not in rule.inputs
    # The lb group is on the two lb ports (and the VIP's), on no other node's.
    carrying = {p.name for p in run_two_lbs.of_kind("Port") if lb_group.id in p.inputs["securityGroupIds"]}
    assert carrying == {"lb-1-port", "lb-2-port", "vip-port"}


def test_one_lb_declares_none_of_it(run_3_3: MockRun) -> None:
    assert not [r for r in run_3_3.of_kind("SecGroupRule") if r.inputs.get("protocol") == "112"]
    assert not [p for p in run_3_3.of_kind("Port") if "allowedAddressPairs" in p.inputs or p.name == "vip-port"]
    assert {g.inputs["name"] for g in run_3_3.of_kind("ServerGroup")} == {"demo-managers", "demo-workers"}
    assert "vip" not in run_3_3.outputs["inventory"]["network"]


def test_the_inventory_names_both_lbs_and_the_vip(run_two_lbs: MockRun) -> None:
    inventory = parse_inventory(inventory_json(run_two_lbs), "pulumi stack output inventory")
    assert [(n.name, str(n.private_ip)) for n in inventory.lbs] == [("lb-1", "10.20.0.5"), ("lb-2", "10.20.0.7")]
    assert str(inventory.network.vip) == VIP
    # HTTP(S) goes to the VIP's floating IP; SSH reaches each lb at a floating IP of its own, so a fresh pair
    # (no VIP held before keepalived and HAProxy run, which bootstrap sets up over SSH) has a way in.
    assert inventory.endpoints.http == f"https://{FLOATING_IP}"
    assert {n.name: str(n.public_ip) for n in inventory.lbs} == {
        "lb-1": SSH_FLOATING_IPS["lb-1-ssh"],
        "lb-2": SSH_FLOATING_IPS["lb-2-ssh"],
    }
    assert inventory.ssh.jump_host == "lb-1" and set(inventory.ssh.host_keys) >= {"lb-1", "lb-2"}
    # known_hosts pins each lb's key at its own address, and nothing at the VIP's.
    lines = [line.split() for line in run_two_lbs.outputs["known_hosts"].splitlines()]
    pinned = {words[0]: " ".join(words[1:]) for words in lines}
    for name in ("lb-1", "lb-2"):
        assert pinned[SSH_FLOATING_IPS[f"{name}-ssh"]] == inventory.ssh.host_keys[name]
    assert FLOATING_IP not in pinned
    assert json.loads(inventory_json(run_two_lbs))["network"] == {"cidr": "10.20.0.0/24", "vip": VIP}


def test_lb_user_data_installs_keepalived_with_two_lbs_only(run_two_lbs: MockRun, run_3_3: MockRun) -> None:
    def provisioning(run: MockRun, role: str) -> list[str]:
        scripts = []
        for instance in instances(run, role):
            document = yaml.safe_load(instance.inputs["userData"])
            [script] = [f["content"] for f in document["write_files"] if f["path"].endswith("swarmlab-provision")]
            scripts.append(script)
        return scripts

    for script in provisioning(run_two_lbs, "lb"):
        assert script == provision_script("lb", lb_count=2) and "apt_install keepalived" in script
    assert all("keepalived" not in s for s in provisioning(run_3_3, "lb"))
    assert all("keepalived" not in s for role in ("manager", "storage") for s in provisioning(run_two_lbs, role))


@pytest.mark.parametrize("value", ["0", "3", "two"])
def test_an_unsupported_lb_count_is_refused_with_its_key(value: str) -> None:
    with pytest.raises(InfraConfigError) as caught:
        parse_config({"admin_cidrs": "198.51.100.0/24", "key_pair": "k", "lb_count": value}, "demo")
    [problem] = caught.value.problems
    assert (problem.key, problem.value) == ("lb_count", value)
    assert problem.message in (
        "must be 1 or 2: one HAProxy node, or two sharing a virtual IP (keepalived)",
        "must be a whole number",
    )


def test_the_inventory_feeds_keepalived_for_both_lbs(run_two_lbs: MockRun) -> None:
    # What the later task will do with this inventory: one configuration per lb, peers crossed.
    inventory = parse_inventory(inventory_json(run_two_lbs))
    assert inventory.network.vip is not None
    lbs = tuple((n.name, str(n.private_ip)) for n in inventory.lbs)
    texts = {
        name: render_config(
            build(
                cluster=inventory.cluster,
                lbs=lbs,
                node=name,
                vip=str(inventory.network.vip),
                cidr=inventory.network.cidr,
                interface="ens3",
                password="abcd1234",
            )
        )
        for name, _ in lbs
    }
    assert "unicast_src_ip 10.20.0.5" in texts["lb-1"] and "10.20.0.7\n" in texts["lb-1"]
    assert "unicast_src_ip 10.20.0.7" in texts["lb-2"] and f"{VIP}/24 dev ens3" in texts["lb-2"]


def test_the_lbs_user_data_passes_cloud_init_schema(run_two_lbs: MockRun, tmp_path: Path) -> None:
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        pytest.fail("cloud-init is missing: `make check-tools` installs it (Debian: cloud-init)")
    running = {}
    for instance in instances(run_two_lbs, "lb"):
        path = tmp_path / f"{instance.name}.yaml"
        path.write_text(instance.inputs["userData"])
        running[instance.name] = subprocess.Popen(
            [cloud_init, "schema", "--config-file", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, process in running.items():
        output = process.communicate(timeout=60)[0]
        assert process.returncode == 0 and "Valid cloud-config" in output, f"{name}: {output}"
