"""The cluster's shape, pure: which nodes, at which fixed addresses, and the inventory describing them.

Fixed addresses make the inventory known at plan time and match the lab's layout, so the Fabric tasks
see the same addresses on a cloud as in the lab. Nothing here touches Pulumi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.config import LB_OFFSET, MANAGER_OFFSET, STORAGE_OFFSET, WORKER_OFFSET, InfraConfig

REGISTRY_PORT = 5000
STATS_PORT = 8404
# Where the storage node mounts its volume; the NFS export lives in its data/ directory.
DATA_MOUNT = "/srv/swarmlab"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: str
    ip: str
    flavor: str
    availability_zone: str | None

    def server_name(self, cluster: str) -> str:
        """The name in OpenStack: prefixed, so two clusters can share a project."""
        return f"{cluster}-{self.name}"


def _zone(config: InfraConfig, index: int) -> str | None:
    # Round-robin over the zones, so losing one zone keeps a Raft majority when there are three.
    zones = config.availability_zones
    return zones[index % len(zones)] if zones else None


def _spec(config: InfraConfig, role: str, number: int, offset: int) -> NodeSpec:
    return NodeSpec(
        name=f"{role}-{number}",
        role=role,
        ip=str(config.address(offset)),
        flavor=config.flavors.of(role),
        availability_zone=_zone(config, number - 1),
    )


def plan_nodes(config: InfraConfig) -> tuple[NodeSpec, ...]:
    """Every node, in the lab's order: lb, storage, managers, workers."""
    nodes = [_spec(config, "lb", 1, LB_OFFSET), _spec(config, "storage", 1, STORAGE_OFFSET)]
    nodes += [_spec(config, "manager", i, MANAGER_OFFSET + i) for i in range(1, config.manager_count + 1)]
    nodes += [_spec(config, "worker", i, WORKER_OFFSET + i) for i in range(1, config.worker_count + 1)]
    return tuple(nodes)


def by_role(nodes: tuple[NodeSpec, ...], role: str) -> tuple[NodeSpec, ...]:
    return tuple(n for n in nodes if n.role == role)


def storage_ip(config: InfraConfig) -> str:
    return str(config.address(STORAGE_OFFSET))


def registry_endpoint(config: InfraConfig) -> str:
    return f"{storage_ip(config)}:{REGISTRY_PORT}"


def default_nfs_endpoint(config: InfraConfig) -> str:
    return f"{storage_ip(config)}:/data"


def inventory_document(
    config: InfraConfig, nodes: tuple[NodeSpec, ...], lb_public_ip: str, nfs_endpoint: str
) -> dict[str, Any]:
    """Inventory schema v1, the same shape the lab writes (see docs/ARCHITECTURE.md)."""
    return {
        "version": 1,
        "cluster": config.cluster_name,
        "provider": "openstack",
        "ssh": {
            "user": config.ssh_user,
            "private_key": config.ssh_private_key,
            "jump_host": "lb-1",
            "port": 22,
            "jump_port": None,
            "known_hosts": None,
        },
        "network": {"cidr": str(config.private_cidr)},
        "nodes": [
            {
                "name": n.name,
                "role": n.role,
                "private_ip": n.ip,
                "public_ip": lb_public_ip if n.role == "lb" else None,
            }
            for n in nodes
        ],
        "endpoints": {
            "http": f"http://{lb_public_ip}",
            "stats": f"http://{lb_public_ip}:{STATS_PORT}/stats",
            "registry": registry_endpoint(config),
            "nfs": nfs_endpoint,
        },
    }


def ssh_config_text(config: InfraConfig, nodes: tuple[NodeSpec, ...], lb_public_ip: str) -> str:
    """An ~/.ssh/config snippet: `ssh <cluster>-manager-1` goes through the lb node as ProxyJump."""
    cluster = config.cluster_name
    lines = [f"# swarmlab cluster {cluster}: append to ~/.ssh/config, then `ssh {cluster}-manager-1`"]
    for node in nodes:
        lines += [
            f"Host {cluster}-{node.name}",
            f"  HostName {lb_public_ip if node.role == 'lb' else node.ip}",
            f"  User {config.ssh_user}",
            f"  IdentityFile {config.ssh_private_key}",
            "  IdentitiesOnly yes",
        ]
        if node.role != "lb":
            lines.append(f"  ProxyJump {cluster}-lb-1")
    return "\n".join(lines) + "\n"
