"""The lab's shape, pure: which node containers to create with which addresses, and the inventory
that describes them. Node names and addresses come from topology/, as on a cloud. Nothing here
touches Docker."""

from __future__ import annotations

import json

import topology
from cluster.config import Config
from cluster.errors import ConfigError, ConfigErrors
from cluster.inventory import Inventory, Role
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
    """Refuse lb_count 2 before anything is made: the lab and the rehearsal make one lb node so far (two
    lbs are groundwork: the Pulumi program makes them; the lab's second lb and its VIP forwarder are not
    built yet), and a lab silently made with one would not be the configured one."""
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
    return topology.plan_nodes(config.cidr, config.managers, config.workers)


def container_name(config: Config, node: topology.PlannedNode) -> str:
    return f"swarmlab-{config.cluster}-{node.name}"


def docker_volume(config: Config, node: topology.PlannedNode) -> str:
    return f"swarmlab-{config.cluster}-{node.name}-docker"


def shape(config: Config) -> str:
    """What makes two labs of the same name the same lab; stored as a label on every node."""
    return json.dumps(
        {"managers": config.managers, "workers": config.workers, "cidr": str(config.cidr)}, sort_keys=True
    )


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
    """The lb node's ports, published on the host's bind address only."""
    address = str(config.bind_address)
    return {
        f"{topology.HTTP_PORT}/tcp": (address, config.http_port),  # redirects to HTTPS only
        f"{topology.HTTPS_PORT}/tcp": (address, config.https_port),
        f"{topology.SSH_PORT}/tcp": (address, config.ssh_port),
        f"{topology.STATS_PORT}/tcp": (address, config.stats_port),
    }


def ssh_endpoint(config: Config, node: topology.PlannedNode) -> tuple[str, int]:
    """Where the operator's machine reaches a node's sshd: the lb on the host, the others through it."""
    if node.role == Role.LB.value:
        return str(config.bind_address), config.ssh_port
    return node.ip, topology.SSH_PORT


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
    )
    return Inventory.model_validate(document)
