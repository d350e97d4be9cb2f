"""The NFS v4 server of the storage node (nfs-ganesha, userspace, so it runs the same in a VM and in a
lab container) and the client options the stack's volumes use. Pure, and a leaf model: typed input
in, configuration text and the daemon spec out; it imports nothing of cluster/."""

from __future__ import annotations

from dataclasses import dataclass

import topology
from rendering.daemon import DaemonSpec, restart_by_pid
from rendering.render import render

CONFIG_PATH = "/etc/ganesha/ganesha.conf"
PID_FILE = f"{topology.GANESHA_RUN_DIR}/ganesha.pid"
_START = (
    f"mkdir -p {topology.GANESHA_RUN_DIR} /var/log/ganesha && (pgrep -x rpcbind >/dev/null || rpcbind) && "
    f"ganesha.nfsd -f {CONFIG_PATH} -L /var/log/ganesha/ganesha.log -p {PID_FILE} </dev/null >/dev/null 2>&1"
)
DAEMON = DaemonSpec(
    name="nfs-ganesha",
    config_path=CONFIG_PATH,
    pid_file=PID_FILE,
    unit="nfs-ganesha",
    start=_START,
    # Ganesha's SIGHUP does not re-read every export option: restart it (Graceless keeps that quick).
    reload=restart_by_pid(PID_FILE, _START),
)
# PostgreSQL's guidance for NFS: hard mounts only (a soft mount can lose writes), NFS v4.1.
CLIENT_OPTIONS = "hard,nfsvers=4.1,timeo=600,retrans=2"


@dataclass(frozen=True)
class GaneshaConfig:
    export_dir: str  # a real filesystem: a bind mount or the Cinder volume, never overlayfs
    pseudo_path: str
    # The only addresses that may mount: the workers (where the stack's volumes mount) and the storage
    # node itself (its own protocol probe). Managers, the lb node and anything else on the subnet may not.
    clients: tuple[str, ...]

    def probe_url(self, host: str) -> str:
        """What libnfs' nfs-ls reads to check the export answers (no kernel NFS client needed)."""
        return f"nfs://{host}{self.pseudo_path}/?version=4"


def build(
    clients: tuple[str, ...], export_dir: str = topology.EXPORT_DIR, pseudo_path: str = topology.NFS_PSEUDO_PATH
) -> GaneshaConfig:
    if not clients:
        raise ValueError("an NFS export needs at least one client address")
    return GaneshaConfig(export_dir, pseudo_path, tuple(sorted(set(clients), key=_address_order)))


def _address_order(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split("."))


def render_config(config: GaneshaConfig) -> str:
    return render("nfs/ganesha.conf.j2", {"config": config})


def volume_options(host: str) -> str:
    """driver_opts `o` of a stack's NFS volume."""
    return f"addr={host},{CLIENT_OPTIONS}"
