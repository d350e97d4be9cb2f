"""cloud-init user data per node, pure: its pinned SSH host key, the role's provisioning script and, on
Docker roles, daemon.json and the tenant-isolation rules (their script and the engine's drop-in that runs it).

The script is the one the lab's node image is built with (rendering.provision), so a VM and a lab
node of the same role have the same software.
"""

from __future__ import annotations

from dataclasses import dataclass

import topology
from infra.config import InfraConfig
from infra.layout import NodeSpec
from rendering.isolation import cluster_isolation_script, isolation_dropin
from rendering.provision import daemon_json, engine_metrics_ip, provision_script
from rendering.render import render

DOCKER_ROLES = ("manager", "worker", "storage")
PROVISION_PATH = "/usr/local/sbin/swarmlab-provision"
# Nova attaches the volume after the server boots, so the script waits this long for the device, then
# mounts it at topology.DATA_ROOT (the script's default mount point, rendered from topology).
DATA_DEVICE_WAIT = 600


# sshd offers this key only (cloud-init's ssh module writes it; no other host key is made).
HOST_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key"


@dataclass(frozen=True)
class HostKeyText:
    """A node's SSH host key in OpenSSH form (the private half is secret: user data is a secret input)."""

    private_openssh: str
    public_openssh: str


@dataclass(frozen=True)
class UserDataInput:
    cluster: str
    hostname: str
    role: str
    daemon_json: str | None
    provision_script: str
    command: tuple[str, ...]
    host_key: HostKeyText
    isolation_script: str | None = None  # Docker roles: rendering.isolation's script and drop-in
    isolation_dropin: str | None = None
    isolation_script_path: str = topology.ISOLATION_SCRIPT
    isolation_dropin_path: str = topology.ISOLATION_DROPIN
    host_key_path: str = HOST_KEY_PATH


def volume_device(volume_id: str) -> str:
    """The stable path of a Cinder volume under virtio-blk: its serial is the first 20 characters of its id."""
    return f"/dev/disk/by-id/virtio-{volume_id[:20]}"


def _command(data_device: str | None) -> tuple[str, ...]:
    if data_device is None:
        return (PROVISION_PATH,)
    return ("env", f"SWARMLAB_DATA_DEVICE={data_device}", f"SWARMLAB_DATA_WAIT={DATA_DEVICE_WAIT}", PROVISION_PATH)


def user_data(config: InfraConfig, node: NodeSpec, host_key: HostKeyText, data_device: str | None = None) -> str:
    """The #cloud-config document of one node: its pinned host key, its role's provisioning; data_device
    only on a storage node with a volume."""
    return render(
        "cloud-init/user-data.yaml.j2",
        UserDataInput(
            cluster=config.cluster_name,
            hostname=node.name,
            role=node.role,
            daemon_json=daemon_json(engine_metrics_ip(node.role, node.ip)) if node.role in DOCKER_ROLES else None,
            provision_script=provision_script(
                node.role, config.debian_mirror, config.debian_suite, lb_count=config.lb_count
            ),
            command=_command(data_device),
            host_key=host_key,
            isolation_script=cluster_isolation_script(config.private_cidr, config.lb_count)
            if node.role in DOCKER_ROLES
            else None,
            isolation_dropin=isolation_dropin() if node.role in DOCKER_ROLES else None,
        ),
    )
