"""The cluster's layout on OpenStack, pure: the planned nodes with their flavors and zones, and the
inventory describing them.

Which nodes, at which fixed addresses, and the inventory's schema come from the topology package, the
same that plans the lab: the Fabric tasks see the same addresses on a cloud as in the lab. Nothing here
touches Pulumi.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import topology
from infra.config import InfraConfig


@dataclass(frozen=True)
class NodeSpec:
    """A planned node and what OpenStack needs besides: its flavor and availability zone."""

    node: topology.PlannedNode
    flavor: str
    availability_zone: str | None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def role(self) -> str:
        return self.node.role

    @property
    def ip(self) -> str:
        return self.node.ip

    def server_name(self, cluster: str) -> str:
        """The name in OpenStack: prefixed, so two clusters can share a project."""
        return f"{cluster}-{self.name}"


def _zone(config: InfraConfig, index: int) -> str | None:
    # Round-robin over the zones, so losing one zone keeps a Raft majority when there are three.
    zones = config.availability_zones
    return zones[index % len(zones)] if zones else None


def plan_nodes(config: InfraConfig) -> tuple[NodeSpec, ...]:
    """Every node, in topology's order: lb(s), storage, managers, workers."""
    planned = topology.plan_nodes(config.private_cidr, config.manager_count, config.worker_count, config.lb_count)
    # Each role starts its own round over the zones: manager-1 and worker-1 both land in the first.
    index_in_role: Counter[str] = Counter()
    specs = []
    for node in planned:
        specs.append(NodeSpec(node, config.flavors.of(node.role), _zone(config, index_in_role[node.role])))
        index_in_role[node.role] += 1
    return tuple(specs)


def by_role(nodes: tuple[NodeSpec, ...], role: str) -> tuple[NodeSpec, ...]:
    return tuple(n for n in nodes if n.role == role)


def inventory_document(
    config: InfraConfig,
    nodes: tuple[NodeSpec, ...],
    lb_public_ip: str,
    host_keys: dict[str, str],
    lb_ssh_ips: Mapping[str, str],
) -> dict[str, Any]:
    """Inventory schema v1, built by topology as the lab's is; the NFS endpoint is the storage node's export.

    host_keys (node name -> public host key) pin every node: the tasks trust no key on first use.
    lb_public_ip serves HTTP(S) (with two lbs, the VIP's floating IP); each lb's `public_ip` is where SSH
    reaches it (lb_ssh_ips: with two lbs, each its own floating IP; with one, the same address).
    """
    return topology.inventory_document(
        cluster=config.cluster_name,
        provider="openstack",
        cidr=config.private_cidr,
        nodes=tuple(n.node for n in nodes),
        ssh={
            "user": config.ssh_user,
            "private_key": config.ssh_private_key,
            "jump_port": None,
            "known_hosts": None,
            "host_keys": host_keys,
        },
        lb_public_ip=lb_public_ip,
        lb_addresses=lb_ssh_ips,
        http=f"https://{lb_public_ip}",
        stats=f"http://{lb_public_ip}:{topology.STATS_PORT}/stats",
        vip=config.vip,
    )


def ssh_address(node: NodeSpec, lb_ssh_ips: Mapping[str, str]) -> str:
    """Where the operator's SSH reaches a node: an lb at its own floating IP, the others through lb-1."""
    return lb_ssh_ips[node.name] if node.role == "lb" else node.ip


def known_hosts_text(nodes: tuple[NodeSpec, ...], lb_ssh_ips: Mapping[str, str], host_keys: dict[str, str]) -> str:
    """The pinned host keys as OpenSSH's known_hosts lines, for your own `ssh` (ssh_config output)."""
    return "".join(f"{ssh_address(node, lb_ssh_ips)} {host_keys[node.name]}\n" for node in nodes)


def ssh_config_text(config: InfraConfig, nodes: tuple[NodeSpec, ...], lb_ssh_ips: Mapping[str, str]) -> str:
    """An ~/.ssh/config snippet: `ssh <cluster>-manager-1` goes through the lb node as ProxyJump."""
    cluster = config.cluster_name
    lines = [
        f"# swarmlab cluster {cluster}: append to ~/.ssh/config, add the known_hosts output to "
        f"~/.ssh/known_hosts, then `ssh {cluster}-manager-1`"
    ]
    for node in nodes:
        lines += [
            f"Host {cluster}-{node.name}",
            f"  HostName {ssh_address(node, lb_ssh_ips)}",
            f"  User {config.ssh_user}",
            f"  IdentityFile {config.ssh_private_key}",
            "  IdentitiesOnly yes",
            # The keys are pinned (`pulumi stack output known_hosts >> ~/.ssh/known_hosts`): never ask.
            "  StrictHostKeyChecking yes",
        ]
        if node.role != "lb":
            lines.append(f"  ProxyJump {cluster}-{topology.LB_NAME}")
    return "\n".join(lines) + "\n"
