"""The cluster's topology facts, stated once: roles, node names, the address plan, ports and paths.

Dependency-free (standard library only) so that infra/ (Pulumi), cluster/ (Fabric) and rendering/
(templates) share one source without importing one another. Nothing here touches a machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Raft keeps a majority only with an odd number of managers; more than 7 slows every write.
MANAGER_COUNTS = (1, 3, 5, 7)
MANAGER_COUNTS_TEXT = ", ".join(str(n) for n in MANAGER_COUNTS[:-1]) + f" or {MANAGER_COUNTS[-1]}"  # "1, 3, 5 or 7"


def manager_count_problem(count: int) -> str | None:
    """Why `count` managers cannot keep a Raft majority (one text for the lab config, the inventory and
    the Pulumi config), or None when they can."""
    if count in MANAGER_COUNTS:
        return None
    return f"must be {MANAGER_COUNTS_TEXT}: Raft needs an odd number of managers to keep a majority"


ROLES = ("manager", "worker", "lb", "storage")

# One HAProxy node (the design's), or two behind a virtual IP that keepalived moves (issue 19).
LB_COUNTS = (1, 2)


def lb_count_problem(count: int) -> str | None:
    """Why `count` lb nodes are not a supported shape (one text for the lab config, the inventory and the
    Pulumi config), or None when they are."""
    if count in LB_COUNTS:
        return None
    return "must be 1 or 2: one HAProxy node, or two sharing a virtual IP (keepalived)"


# Host offsets inside the node network (.1 is the gateway or router). Fixed offsets make the
# inventory known before any machine exists, and the same on a cloud as in the lab.
LB_OFFSET, STORAGE_OFFSET, MANAGER_OFFSET, WORKER_OFFSET = 5, 6, 10, 20
# With two lbs: the second sits at .7 (free between storage and the managers), and the virtual IP they
# share at .4 (below lb-1; .1 is the gateway, and Docker or Neutron may take .2 and .3 for their own).
LB2_OFFSET, VIP_OFFSET = 7, 4

LB_NAME = "lb-1"
STORAGE_NAME = "storage-1"

SSH_PORT = 22
HTTP_PORT = 80  # HAProxy's HTTP frontend on the lb node: it only redirects to HTTPS
HTTPS_PORT = 443  # HAProxy's HTTPS frontend on the lb node (TLS ends here)
STATS_PORT = 8404  # HAProxy's stats page on the lb node (admin CIDRs only on a cloud)
SWARM_PORT = 2377  # Swarm cluster management (Raft, joins)
SWARM_GOSSIP_PORT = 7946  # Swarm node gossip (tcp and udp)
VXLAN_PORT = 4789  # Swarm overlay networks' data (udp)
REGISTRY_PORT = 5000  # the cluster's image registry, on the storage node (pulls only: read-only)
# The same registry's writable endpoint, on the storage node's loopback only (its builds push there).
REGISTRY_PUSH_PORT = 5001
NFS_PORT = 2049
# Docker engine metrics (Prometheus format) on a swarm node's private address: the cluster network only.
ENGINE_METRICS_PORT = 9323
# HAProxy's built-in Prometheus exporter, bound to the lb node's private address (the cluster network only).
LB_METRICS_PORT = 8405
# The cluster map, a plain container on each manager's private address (HAProxy routes /map/ to it).
MAP_PORT = 9080
# The ports an edge service (a workload route) publishes in host mode on the workers, first to last. A
# cloud's security groups open exactly these to HAProxy: a route outside them would get no traffic there.
ROUTE_PORTS = (8000, 8099)
# The roles that run a Docker engine in the swarm (the storage node's engine only builds images).
SWARM_ROLES = ("manager", "worker")

# The storage node keeps everything under DATA_ROOT (the Cinder volume on a cloud, a Docker volume in
# the lab: a real filesystem, never overlayfs); the NFS export is its data/ directory.
DATA_ROOT = "/srv/swarmlab"
EXPORT_DIR = f"{DATA_ROOT}/data"
NFS_PSEUDO_PATH = "/data"  # the export's NFS v4 pseudo path

# Paths on the nodes.
DOCKER_DIR = "/var/lib/docker"  # an engine's data root (the lab keeps it in a volume: the image cache)
SWARM_DIR = f"{DOCKER_DIR}/swarm"  # an engine's swarm state: Raft log, keys, certificates
RAFT_DIR = f"{SWARM_DIR}/raft"
REGISTRY_DATA_DIR = "/var/lib/docker-registry"  # the image registry's blobs, on the storage node's own disk
GANESHA_RUN_DIR = "/var/run/ganesha"  # where nfs-ganesha keeps its pid file
NODE_WORK_DIR = "/root/.swarmlab"  # what the tasks write on a node: rendered stacks, configs, backups
# Tenant isolation (rendering/isolation.py): the script that puts the DOCKER-USER rules in place on a
# Docker node, and the systemd drop-in that runs it each time the engine starts.
ISOLATION_SCRIPT = "/usr/local/sbin/swarmlab-isolate"
ISOLATION_DROPIN = "/etc/systemd/system/docker.service.d/swarmlab-isolation.conf"
# The cloud's metadata service (OpenStack, as EC2): it hands any caller on the VM the server's user data.
METADATA_ADDRESS = "169.254.169.254"


def node_name(role: str, number: int) -> str:
    return f"{role}-{number}"


@dataclass(frozen=True)
class PlannedNode:
    """A node of the cluster before it exists: its name, role and fixed private address."""

    name: str
    role: str
    ip: str


def address(cidr: ipaddress.IPv4Network, offset: int) -> str:
    return str(cidr.network_address + offset)


def addresses_needed(workers: int) -> int:
    """How many addresses the node network must hold for this many workers (the last is WORKER_OFFSET+n)."""
    return WORKER_OFFSET + workers + 1


def plan_nodes(cidr: ipaddress.IPv4Network, managers: int, workers: int, lbs: int = 1) -> tuple[PlannedNode, ...]:
    """Every node in a fixed order: lb(s), storage, managers, workers."""
    nodes = [PlannedNode(LB_NAME, "lb", address(cidr, LB_OFFSET))]
    if lbs == 2:
        nodes.append(PlannedNode(node_name("lb", 2), "lb", address(cidr, LB2_OFFSET)))
    elif lbs != 1:
        raise ValueError(f"lbs={lbs}: {lb_count_problem(lbs)}")
    nodes.append(PlannedNode(STORAGE_NAME, "storage", address(cidr, STORAGE_OFFSET)))
    nodes += [
        PlannedNode(node_name("manager", i), "manager", address(cidr, MANAGER_OFFSET + i))
        for i in range(1, managers + 1)
    ]
    nodes += [
        PlannedNode(node_name("worker", i), "worker", address(cidr, WORKER_OFFSET + i)) for i in range(1, workers + 1)
    ]
    return tuple(nodes)


def lb_ips(cidr: ipaddress.IPv4Network, lbs: int) -> tuple[str, ...]:
    """The lb nodes' addresses, as plan_nodes gives them: where HAProxy's requests to the services come from."""
    return tuple(n.ip for n in plan_nodes(cidr, 1, 0, lbs) if n.role == "lb")


def vip_address(cidr: ipaddress.IPv4Network) -> str:
    """The virtual IP two lbs share (keepalived holds it on one of them; a cloud's floating IP points at it)."""
    return address(cidr, VIP_OFFSET)


def storage_ip(cidr: ipaddress.IPv4Network) -> str:
    return address(cidr, STORAGE_OFFSET)


def registry_endpoint(cidr: ipaddress.IPv4Network) -> str:
    return f"{storage_ip(cidr)}:{REGISTRY_PORT}"


def nfs_endpoint(cidr: ipaddress.IPv4Network) -> str:
    """host:/path, as `mount` and the inventory write it."""
    return f"{storage_ip(cidr)}:{NFS_PSEUDO_PATH}"


def inventory_document(
    *,
    cluster: str,
    provider: str,
    cidr: ipaddress.IPv4Network,
    nodes: tuple[PlannedNode, ...],
    ssh: dict[str, Any],
    lb_public_ip: str,
    http: str,
    stats: str,
    vip: str | None = None,
    lb_addresses: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Inventory schema v1 (the contract between whatever made the machines and the tasks), as plain data.

    The lab and the Pulumi program both build theirs here, so the two cannot drift apart. `vip`: the
    virtual IP of two lbs (network.vip); with one lb there is none and the document has no such key.
    Every lb node carries `lb_public_ip` as its `public_ip` (the lab's: both lbs at the published port,
    where the VIP forwarder reaches whichever holds the VIP), unless `lb_addresses` gives it one of its own
    (a cloud's pair: each lb's own floating IP, for SSH).
    """
    own = lb_addresses or {}
    network: dict[str, str] = {"cidr": str(cidr)}
    if vip is not None:
        network["vip"] = vip
    return {
        "version": 1,
        "cluster": cluster,
        "provider": provider,
        "ssh": {"jump_host": LB_NAME, "port": SSH_PORT, **ssh},
        "network": network,
        "nodes": [
            {
                "name": n.name,
                "role": n.role,
                "private_ip": n.ip,
                "public_ip": own.get(n.name, lb_public_ip) if n.role == "lb" else None,
            }
            for n in nodes
        ],
        "endpoints": {
            "http": http,
            "stats": stats,
            "registry": registry_endpoint(cidr),
            "nfs": nfs_endpoint(cidr),
        },
    }
