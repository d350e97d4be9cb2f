"""The lab's shape, pure: which node containers to create with which addresses, and the inventory
that describes them. Nothing here touches Docker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cluster.config import LB_OFFSET, MANAGER_OFFSET, STORAGE_OFFSET, WORKER_OFFSET, Config
from cluster.inventory import Inventory, Network, Node, Role, SshSettings

LABEL_CLUSTER = "swarmlab.cluster"
LABEL_ROLE = "swarmlab.role"
LABEL_NODE = "swarmlab.node"
LABEL_SHAPE = "swarmlab.shape"
# Container-side ports of the lb node that the host reaches on bind_address.
LB_HTTP, LB_SSH, LB_STATS = 80, 22, 8404


@dataclass(frozen=True)
class LabNode:
    name: str
    role: Role
    ip: str

    def container(self, cluster: str) -> str:
        return f"swarmlab-{cluster}-{self.name}"

    def docker_volume(self, cluster: str) -> str:
        return f"swarmlab-{cluster}-{self.name}-docker"


def lab_nodes(config: Config) -> tuple[LabNode, ...]:
    nodes = [LabNode("lb-1", Role.LB, config.address(LB_OFFSET))]
    nodes.append(LabNode("storage-1", Role.STORAGE, config.address(STORAGE_OFFSET)))
    nodes += [
        LabNode(f"manager-{i}", Role.MANAGER, config.address(MANAGER_OFFSET + i)) for i in range(1, config.managers + 1)
    ]
    nodes += [
        LabNode(f"worker-{i}", Role.WORKER, config.address(WORKER_OFFSET + i)) for i in range(1, config.workers + 1)
    ]
    return tuple(nodes)


def shape(config: Config) -> str:
    """What makes two labs of the same name the same lab; stored as a label on every node."""
    return json.dumps(
        {"managers": config.managers, "workers": config.workers, "cidr": str(config.cidr)}, sort_keys=True
    )


def network_name(config: Config) -> str:
    return f"swarmlab-{config.cluster}"


def data_volume(config: Config) -> str:
    """The storage node's export directory: a Docker volume, so it sits on a real filesystem, not overlayfs."""
    return f"swarmlab-{config.cluster}-storage-data"


def labels(config: Config, node: LabNode | None = None) -> dict[str, str]:
    found = {LABEL_CLUSTER: config.cluster, LABEL_SHAPE: shape(config)}
    if node is not None:
        found |= {LABEL_ROLE: node.role.value, LABEL_NODE: node.name}
    return found


def published_ports(config: Config) -> dict[str, tuple[str, int]]:
    address = str(config.bind_address)
    return {
        f"{LB_HTTP}/tcp": (address, config.http_port),
        f"{LB_SSH}/tcp": (address, config.ssh_port),
        f"{LB_STATS}/tcp": (address, config.stats_port),
    }


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @property
    def private_key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.json"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"


def lab_inventory(config: Config, paths: StatePaths) -> Inventory:
    bind = str(config.bind_address)
    nodes = tuple(
        Node(name=n.name, role=n.role, private_ip=n.ip, public_ip=bind if n.role is Role.LB else None)
        for n in lab_nodes(config)
    )
    storage_ip = config.address(STORAGE_OFFSET)
    return Inventory(
        version=1,
        cluster=config.cluster,
        provider="lab",
        ssh=SshSettings(
            user="root",
            private_key=str(paths.private_key),
            jump_host="lb-1",
            port=22,
            jump_port=config.ssh_port,
            known_hosts=str(paths.known_hosts),
        ),
        network=Network(cidr=config.cidr),
        nodes=nodes,
        endpoints={
            "http": f"http://{bind}:{config.http_port}",
            "stats": f"http://{bind}:{config.stats_port}/stats",
            "registry": f"{storage_ip}:5000",
            "nfs": f"{storage_ip}:/data",
        },
    )
