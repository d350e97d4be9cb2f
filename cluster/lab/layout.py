"""The lab's shape, pure: which node containers to create with which addresses, and the inventory
that describes them. Node names and addresses come from topology/, as on a cloud. Nothing here
touches Docker."""

from __future__ import annotations

import json

import topology
from cluster.config import Config
from cluster.errors import ConfigError, ConfigErrors
from cluster.inventory import Inventory, Role
from cluster.lab import keys
from cluster.state import StatePaths

LABEL_CLUSTER = "swarmlab.cluster"
LABEL_ROLE = "swarmlab.role"
LABEL_NODE = "swarmlab.node"
LABEL_SHAPE = "swarmlab.shape"
# The image cache a lab keeps across lab-down: labelled apart from the lab (`lab-down --purge` removes it).
LABEL_CACHE = "swarmlab.cache"
# The machine's image cache: one volume shared by every lab here, mounted on each storage node, from
# which an empty cluster registry is filled without building (plans.images.ImageCache). Neither
# lab-down nor --purge of one lab removes it (other labs use it); `lab-down --purge --machine-cache`
# and `make clean` do.
IMAGE_CACHE_VOLUME = "swarmlab-image-cache"
LABEL_IMAGE_CACHE = "swarmlab.image-cache"
IMAGE_CACHE_DIR = "/var/cache/swarmlab/images"


def one_lb_only(config: Config, what: str) -> None:
    """Refuse lb_count 2 before anything is made: the rehearsal makes one lb node (its nodes are VMs of
    cloud-init's making, and no forwarder stands in for the floating IP there yet), and a rehearsal
    silently made with one would not be the configured one. The lab makes two (see VIP forwarder below)."""
    if config.lb_count != 1:
        raise ConfigErrors(
            [
                ConfigError(
                    "lb_count",
                    config.lb_count,
                    f"{what} makes one lb node so far (two lbs exist on a cloud only: docs/architecture.md)",
                    "set lb_count: 1 in swarmlab.yaml, or unset SWARMLAB_LB_COUNT",
                )
            ]
        )


def lab_nodes(config: Config) -> tuple[topology.PlannedNode, ...]:
    return topology.plan_nodes(config.cidr, config.managers, config.workers, config.lb_count)


def two_lbs(config: Config) -> bool:
    return config.lb_count == 2


def container_name(config: Config, node: topology.PlannedNode) -> str:
    return f"swarmlab-{config.cluster}-{node.name}"


def docker_volume(config: Config, node: topology.PlannedNode) -> str:
    return f"swarmlab-{config.cluster}-{node.name}-docker"


def shape(config: Config) -> str:
    """What makes two labs of the same name the same lab; stored as a label on every node."""
    found: dict[str, object] = {"managers": config.managers, "workers": config.workers, "cidr": str(config.cidr)}
    if two_lbs(config):  # one lb: the label's bytes as before, so a lab already up is still the same lab
        found["lbs"] = config.lb_count
    return json.dumps(found, sort_keys=True)


def network_name(config: Config) -> str:
    return f"swarmlab-{config.cluster}"


def data_volume(config: Config) -> str:
    """The storage node's data directory: a Docker volume, so it sits on a real filesystem, not overlayfs."""
    return f"swarmlab-{config.cluster}-storage-data"


def registry_cache(config: Config) -> str:
    """The storage node's registry data: a volume that outlives the lab, so the next lab of this name
    pulls its images instead of building them again."""
    return f"swarmlab-{config.cluster}-registry-cache"


def labels(config: Config, node: topology.PlannedNode | None = None) -> dict[str, str]:
    found = {LABEL_CLUSTER: config.cluster, LABEL_SHAPE: shape(config)}
    if node is not None:
        found |= {LABEL_ROLE: node.role, LABEL_NODE: node.name}
    return found


def published_ports(config: Config) -> dict[str, tuple[str, int]]:
    """The lb node's ports (with two lbs, the VIP forwarder's), published on the host's bind address only."""
    address = str(config.bind_address)
    return {
        f"{topology.HTTP_PORT}/tcp": (address, config.http_port),  # redirects to HTTPS only
        f"{topology.HTTPS_PORT}/tcp": (address, config.https_port),
        f"{topology.SSH_PORT}/tcp": (address, config.ssh_port),
        f"{topology.STATS_PORT}/tcp": (address, config.stats_port),
    }


def node_ports(config: Config, node: topology.PlannedNode) -> dict[str, tuple[str, int]]:
    """What a node container publishes: the lb with one lb; with two, no node (the forwarder does)."""
    return published_ports(config) if node.role == Role.LB.value and not two_lbs(config) else {}


def ssh_endpoint(config: Config, node: topology.PlannedNode) -> tuple[str, int]:
    """Where the operator's machine reaches a node's sshd: the lb on the host, the others through it."""
    if node.role == Role.LB.value:
        return str(config.bind_address), config.ssh_port
    return node.ip, topology.SSH_PORT


def pinned_at(config: Config, node: topology.PlannedNode) -> tuple[tuple[str, int], ...]:
    """Where known_hosts pins a node's host key, its own address last. Each of two lbs at the published
    SSH port, which reaches whichever holds the VIP (the runner holds each to its own key there), and at
    its private address, where the runner finds its own key and reaches it through the other lb."""
    if node.role == Role.LB.value and two_lbs(config):
        return (ssh_endpoint(config, node), (node.ip, topology.SSH_PORT))
    return (ssh_endpoint(config, node),)


def known_hosts_text(config: Config, public_keys: dict[str, str]) -> str:
    """The lab's known_hosts: every node's key (by name: "ssh-ed25519 AAAA... comment") where it is pinned."""
    lines = [
        keys.known_hosts_line(host, port, public_keys[node.name])
        for node in lab_nodes(config)
        for host, port in pinned_at(config, node)
    ]
    return "\n".join(lines) + "\n"


def rekeyed(known_hosts: str, config: Config, node: topology.PlannedNode, public_key: str) -> str:
    """known_hosts with `node`'s key replaced by `public_key` (a re-created node): its old key is the one
    at its own address; where two lbs share an address, the other lb's line there stays."""
    places = {keys.host_entry(host, port) for host, port in pinned_at(config, node)}
    own = keys.host_entry(*pinned_at(config, node)[-1])
    lines = [line for line in known_hosts.splitlines() if line.strip()]
    old = {line.split()[2] for line in lines if line.split()[0] == own and len(line.split()) > 2}

    def stale(line: str) -> bool:
        name, *rest = line.split()
        return name in places and (name == own or (len(rest) > 1 and rest[1] in old))

    fresh = [keys.known_hosts_line(host, port, public_key) for host, port in pinned_at(config, node)]
    return "\n".join([*(line for line in lines if not stale(line)), *fresh]) + "\n"


def lab_inventory(config: Config, paths: StatePaths) -> Inventory:
    bind = str(config.bind_address)
    document = topology.inventory_document(
        cluster=config.cluster,
        provider="lab",
        cidr=config.cidr,
        nodes=lab_nodes(config),
        ssh={
            "user": "root",
            "private_key": str(paths.private_key),
            "jump_port": config.ssh_port,
            "known_hosts": str(paths.known_hosts),
        },
        lb_public_ip=bind,
        http=f"https://{bind}:{config.https_port}",
        stats=f"http://{bind}:{config.stats_port}/stats",
        vip=vip(config),
    )
    return Inventory.model_validate(document)


def vip(config: Config) -> str | None:
    """The virtual IP of two lbs (topology's), None with one."""
    return topology.vip_address(config.cidr) if two_lbs(config) else None


def reserved_addresses(config: Config) -> dict[str, str] | None:
    """Addresses the lab network's IPAM must never hand out (Docker's aux addresses): the VIP, which
    keepalived puts on an lb. Every lab container has a static address anyway; this keeps one attached
    by hand off it too. None with one lb: the network is made as before."""
    found = vip(config)
    return {"vip": found} if found is not None else None


# --- the VIP forwarder (two lbs): the lab's stand-in for a cloud's floating IP ----------------------

FORWARDER = "vip-forwarder"
# Its address: where a cloud puts the provider's own ports (.2-.3 are left to Docker and Neutron; in
# the lab Docker takes only the gateway, .1), below the VIP (.4) and the nodes (.5 and up).
FORWARDER_OFFSET = 3
LABEL_FORWARDER = "swarmlab.forwarder"
FORWARDER_CONFIG = "/etc/swarmlab-forwarder/haproxy.cfg"


def forwarder_name(config: Config) -> str:
    return f"swarmlab-{config.cluster}-{FORWARDER}"


def forwarder_ip(config: Config) -> str:
    return topology.address(config.cidr, FORWARDER_OFFSET)


def forwarder_labels(config: Config) -> dict[str, str]:
    """The lab's labels (lab-down removes it with the nodes) and its own; no node label: it is no node."""
    return labels(config) | {LABEL_FORWARDER: "vip", LABEL_ROLE: FORWARDER}


def container_names(config: Config) -> set[str]:
    """Every container lab-up makes: one per node, and the forwarder with two lbs."""
    names = {container_name(config, node) for node in lab_nodes(config)}
    return names | {forwarder_name(config)} if two_lbs(config) else names
