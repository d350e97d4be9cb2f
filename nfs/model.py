"""The NFS v4 server of the storage node (nfs-ganesha, userspace, so it runs the same in a VM and in a
lab container) and the client side options the stack's volumes use. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.daemon import Daemon
from cluster.inventory import Inventory
from rendering.render import render

CONFIG_PATH = "/etc/ganesha/ganesha.conf"
PID_FILE = "/var/run/ganesha/ganesha.pid"
EXPORT_DIR = "/srv/swarmlab/data"  # a real filesystem: a bind mount or the Cinder volume, never overlayfs
PSEUDO_PATH = "/data"
_START = (
    "mkdir -p /var/run/ganesha /var/log/ganesha && (pgrep -x rpcbind >/dev/null || rpcbind) && "
    f"ganesha.nfsd -f {CONFIG_PATH} -L /var/log/ganesha/ganesha.log -p {PID_FILE} </dev/null >/dev/null 2>&1"
)
GANESHA = Daemon(
    name="nfs-ganesha",
    config_path=CONFIG_PATH,
    pid_file=PID_FILE,
    unit="nfs-ganesha",
    start=_START,
    # Ganesha's SIGHUP does not re-read every export option: restart it (Graceless keeps that quick).
    reload=f"pid=$(head -n1 {PID_FILE}); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.2; done; {_START}",
)
# PostgreSQL's guidance for NFS: hard mounts only (a soft mount can lose writes), NFS v4.1.
CLIENT_OPTIONS = "hard,nfsvers=4.1,timeo=600,retrans=2"


@dataclass(frozen=True)
class GaneshaConfig:
    export_dir: str
    pseudo_path: str
    clients: str  # the cluster subnet: nothing else may mount


def build(inventory: Inventory) -> GaneshaConfig:
    return GaneshaConfig(EXPORT_DIR, PSEUDO_PATH, str(inventory.network.cidr))


def render_config(config: GaneshaConfig) -> str:
    return render("nfs/ganesha.conf.j2", {"config": config})
