"""The rehearsal's shape, pure: the Pulumi stack configuration it runs the program with, each node's
NoCloud seed, and where its containers, volumes and data device are. Nothing here touches Docker.

The seed is what Nova hands a server on OpenStack: `user-data` is the program's user data, unchanged;
`meta-data` carries the instance id, the hostname and the key pair's public key (`public-keys`, which
cloud-init's NoCloud datasource reads as it reads the OpenStack metadata service's).
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

import topology
from cluster.config import Config

SEED_DIR = "/var/lib/cloud/seed/nocloud"
DOCKER_DIR = "/var/lib/docker"
# The storage volume's file on this machine, attached through a loop device (sparse: only what is written
# takes space). Cinder's default in infra/config.py is 50 GiB; the rehearsal needs far less.
VOLUME_SIZE_GIB = 8
# A VM comes back from `systemctl reboot`; systemd as a container's PID 1 exits instead (129 on reboot,
# 130 on poweroff, measured), so Docker starts the container again on a non-zero exit: the cloud path's
# reboot over SSH (maintain-nodes --reboot) works here unchanged. A poweroff restarts too (Docker cannot
# tell the codes apart); `docker stop` (recover's lost node) stays stopped, as Docker never restarts those.
REBOOT_POLICY = {"Name": "on-failure"}
# A VM's root filesystem is its own, /run and /tmp are tmpfs: systemd as PID 1 needs them so.
TMPFS = {"/run": "rw,nosuid,nodev,mode=755", "/run/lock": "rw,nosuid,nodev,noexec", "/tmp": "rw,nosuid,nodev"}


def stack_config(config: Config, public_key: str, private_key_path: str) -> dict[str, str]:
    """The stack configuration `pulumi up` would run with for this rehearsal (Pulumi.<stack>.yaml)."""
    return {
        "cluster_name": config.cluster,
        "public_key": public_key,
        "ssh_private_key": private_key_path,
        "manager_count": str(config.managers),
        "worker_count": str(config.workers),
        "private_cidr": str(config.cidr),
        # The operator's machine reaches the rehearsal network from its gateway address.
        "admin_cidrs": str(gateway(config.cidr)) + "/32",
        "debian_mirror": config.debian_mirror,
        "debian_suite": config.debian_suite,
    }


def gateway(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's address on the host (Docker takes the network's first address), as a router's."""
    return cidr.network_address + 1


def floating_ip(config: Config) -> str:
    """The lb's public address: its own address on the rehearsal network, which this machine routes to
    (a floating IP is NAT to the port's fixed address; here nothing needs translating)."""
    return config.address(topology.LB_OFFSET)


def meta_data(instance_id: str, hostname: str, public_keys: list[str]) -> str:
    return yaml.safe_dump(
        {"instance-id": instance_id, "local-hostname": hostname, "public-keys": public_keys}, sort_keys=False
    )


def seed_files(instance_id: str, hostname: str, user_data: str, public_keys: list[str]) -> dict[str, bytes]:
    return {
        f"{SEED_DIR}/user-data": user_data.encode(),
        f"{SEED_DIR}/meta-data": meta_data(instance_id, hostname, public_keys).encode(),
    }


def data_device(user_data: str) -> str | None:
    """The device the user data's provisioning waits for (SWARMLAB_DATA_DEVICE in its runcmd), if any."""
    document: dict[str, Any] = yaml.safe_load(user_data) or {}
    for command in document.get("runcmd") or []:
        words = command if isinstance(command, list) else shlex.split(str(command))
        for word in words:
            if str(word).startswith("SWARMLAB_DATA_DEVICE="):
                return str(word).partition("=")[2]
    return None


@dataclass(frozen=True)
class Names:
    """Where one rehearsal lives on the local engine and in its state directory."""

    cluster: str

    def container(self, node: str) -> str:
        return f"swarmlab-{self.cluster}-{node}"

    def docker_volume(self, node: str) -> str:
        return f"swarmlab-{self.cluster}-{node}-docker"

    @property
    def network(self) -> str:
        return f"swarmlab-{self.cluster}"

    @property
    def volume_file(self) -> str:
        return "storage-volume.img"

    @property
    def volume_share(self) -> str:
        """The directory of the state directory where this machine mounts the storage volume for the workers."""
        return "storage-volume-share"
