"""The program under mocks: nodes per role, server groups, addresses, the one public address, parenting."""

from __future__ import annotations

import ipaddress

import pytest

from tests.infra.harness import EXTERNAL_NETWORK_ID, FLOATING_IP, Declared, MockRun, run_config

SHAPES = [("run_3_3", 3, 3), ("run_5_7", 5, 7)]


def role_of(instance: Declared) -> str:
    return str(instance.inputs["metadata"]["swarmlab_role"])


def instances(run: MockRun, role: str) -> list[Declared]:
    return [i for i in run.of_kind("Instance") if role_of(i) == role]


def port_of(run: MockRun, instance: Declared) -> Declared:
    return run.by_id(instance.inputs["networks"][0]["port"])


@pytest.mark.parametrize(("fixture", "managers", "workers"), SHAPES)
def test_node_counts_per_role(request: pytest.FixtureRequest, fixture: str, managers: int, workers: int) -> None:
    run: MockRun = request.getfixturevalue(fixture)
    counts = {role: len(instances(run, role)) for role in ("manager", "worker", "lb", "storage")}
    assert counts == {"manager": managers, "worker": workers, "lb": 1, "storage": 1}
    names = sorted(i.inputs["name"] for i in run.of_kind("Instance"))
    expected = [f"demo-manager-{i}" for i in range(1, managers + 1)] + [
        f"demo-worker-{i}" for i in range(1, workers + 1)
    ]
    assert names == sorted([*expected, "demo-lb-1", "demo-storage-1"])


@pytest.mark.parametrize(("fixture", "policy"), [("run_3_3", "anti-affinity"), ("run_5_7", "soft-anti-affinity")])
def test_server_groups_policy_and_membership(request: pytest.FixtureRequest, fixture: str, policy: str) -> None:
    run: MockRun = request.getfixturevalue(fixture)
    groups = {g.inputs["name"]: g for g in run.of_kind("ServerGroup")}
    assert set(groups) == {"demo-managers", "demo-workers"}
    assert all(g.inputs["policies"] == policy for g in groups.values())
    for role, group in (("manager", groups["demo-managers"]), ("worker", groups["demo-workers"])):
        for instance in instances(run, role):
            assert instance.inputs["schedulerHints"] == [{"group": group.id}], instance.name
    # The lb and storage nodes are single: no group, nothing to spread.
    for instance in instances(run, "lb") + instances(run, "storage"):
        assert "schedulerHints" not in instance.inputs


def test_instances_spread_over_availability_zones(run_5_7: MockRun, run_3_3: MockRun) -> None:
    zones = {i.inputs["name"]: i.inputs.get("availabilityZone") for i in run_5_7.of_kind("Instance")}
    assert [zones[f"demo-manager-{i}"] for i in range(1, 6)] == ["az-1", "az-2", "az-3", "az-1", "az-2"]
    assert [zones[f"demo-worker-{i}"] for i in range(1, 8)] == ["az-1", "az-2", "az-3"] * 2 + ["az-1"]
    # No zones configured: the cloud places the servers (no availability_zone input at all).
    assert all("availabilityZone" not in i.inputs for i in run_3_3.of_kind("Instance"))


def test_exactly_one_floating_ip_on_the_lb_node(any_run: MockRun) -> None:
    floating_ips = any_run.of_kind("FloatingIp")
    associations = any_run.of_kind("FloatingIpAssociate")
    assert len(floating_ips) == 1 and len(associations) == 1
    assert floating_ips[0].inputs["pool"] == "public"
    (lb,) = instances(any_run, "lb")
    assert associations[0].inputs["portId"] == port_of(any_run, lb).id
    assert associations[0].inputs["floatingIp"] == FLOATING_IP
    # No other way to a public address: every port is on the private network, none has a floating IP.
    assert all("floatingIp" not in p.inputs for p in any_run.of_kind("Port"))


@pytest.mark.parametrize(("fixture", "managers", "workers"), SHAPES)
def test_fixed_addresses_follow_the_lab_layout(
    request: pytest.FixtureRequest, fixture: str, managers: int, workers: int
) -> None:
    run: MockRun = request.getfixturevalue(fixture)
    subnet = run.of_kind("Subnet")[0]
    addresses = {}
    for instance in run.of_kind("Instance"):
        (fixed,) = port_of(run, instance).inputs["fixedIps"]
        assert fixed["subnetId"] == subnet.id
        addresses[instance.inputs["name"].removeprefix("demo-")] = fixed["ipAddress"]
    expected = {"lb-1": "10.20.0.5", "storage-1": "10.20.0.6"}
    expected |= {f"manager-{i}": f"10.20.0.{10 + i}" for i in range(1, managers + 1)}
    expected |= {f"worker-{i}": f"10.20.0.{20 + i}" for i in range(1, workers + 1)}
    assert addresses == expected
    # DHCP and router ports are allocated from a pool that starts above every node address.
    (pool,) = subnet.inputs["allocationPools"]
    assert max(ipaddress.IPv4Address(a) for a in addresses.values()) < ipaddress.IPv4Address(pool["start"])


def test_network_subnet_and_router(run_3_3: MockRun) -> None:
    (network,) = run_3_3.of_kind("Network")
    (subnet,) = run_3_3.of_kind("Subnet")
    (router,) = run_3_3.of_kind("Router")
    (interface,) = run_3_3.of_kind("RouterInterface")
    assert subnet.inputs["networkId"] == network.id
    assert subnet.inputs["cidr"] == "10.20.0.0/24" and subnet.inputs["gatewayIp"] == "10.20.0.1"
    assert subnet.inputs["dnsNameservers"] == ["1.1.1.1", "9.9.9.9"]
    assert router.inputs["externalNetworkId"] == EXTERNAL_NETWORK_ID
    assert interface.inputs == {"routerId": router.id, "subnetId": subnet.id}
    assert all(p.inputs["networkId"] == network.id for p in run_3_3.of_kind("Port"))


def test_storage_volume_attached_and_protected(run_3_3: MockRun) -> None:
    (volume,) = run_3_3.of_kind("Volume")
    (attach,) = run_3_3.of_kind("VolumeAttach")
    (storage,) = instances(run_3_3, "storage")
    assert volume.inputs["size"] == 50
    assert volume.protect, "the data volume must be protected against pulumi destroy by default"
    assert attach.inputs == {"instanceId": storage.id, "volumeId": volume.id}
    # Nothing else is protected: destroying the rest must stay easy.
    assert [r.name for r in run_3_3.resources if r.protect] == [volume.name]


def test_storage_protection_can_be_switched_off() -> None:
    run = run_config({"storage_protect": "false", "storage_size": "200"})
    (volume,) = run.of_kind("Volume")
    assert not volume.protect and volume.inputs["size"] == 200


def test_public_key_is_uploaded_as_a_key_pair() -> None:
    run = run_config({"key_pair": "", "public_key": "ssh-ed25519 AAAAC3Nza demo"})
    (keypair,) = run.of_kind("Keypair")
    assert keypair.inputs["publicKey"] == "ssh-ed25519 AAAAC3Nza demo"
    assert all(i.inputs["keyPair"] == keypair.inputs["name"] for i in run.of_kind("Instance"))
    # The provider marks a cloud-generated private key secret; none is generated, but none may leak.
    assert "privateKey" in keypair.secret_outputs


def test_every_resource_is_a_child_of_the_cluster_component(any_run: MockRun) -> None:
    (cluster,) = any_run.of_kind("SwarmCluster")
    for resource in any_run.resources:
        if resource is not cluster:
            assert "swarmlab:index:SwarmCluster" in resource.parent, f"{resource.kind} {resource.name} is not under it"
    components = {r.kind for r in any_run.resources if r.parent.endswith("SwarmCluster::demo")}
    assert components == {
        "ClusterNetwork",
        "ClusterSecurity",
        "HostKeys",
        "SwarmNodes",
        "LoadBalancerNode",
        "StorageNode",
    }
