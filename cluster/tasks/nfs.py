"""The nfs task: the storage node's NFS v4 export (nfs-ganesha), configured and checked at the
protocol level with a userspace client (libnfs), which works where the kernel has no NFS client."""

from __future__ import annotations

import time

from cluster.errors import SwarmlabError
from cluster.progress import phase
from cluster.runners import Nodes
from cluster.tasks.daemon import push_config
from nfs.model import GANESHA, build, render_config

PROBE_TIMEOUT = 30


def configure_nfs(nodes: Nodes) -> None:
    storage = nodes.inventory.storage
    if storage is None:
        return
    with phase("nfs", f"NFS v4 export {build(nodes.inventory).pseudo_path} on {storage.name} (nfs-ganesha)") as p:
        config = build(nodes.inventory)
        nodes.run(storage, f"mkdir -p {config.export_dir}")
        push_config(nodes, storage, GANESHA, render_config(config), p)
        url = f"nfs://{storage.private_ip}{config.pseudo_path}/?version=4"
        deadline = time.monotonic() + PROBE_TIMEOUT
        while not nodes.run(storage, f"nfs-ls '{url}' >/dev/null", check=False).ok:
            if time.monotonic() > deadline:
                nodes.run(storage, f"nfs-ls '{url}'", hint="see /var/log/ganesha/ganesha.log on the storage node")
                raise SwarmlabError(f"the NFS export {url} does not answer")
            time.sleep(1)
        p.note(f"{url} answers (checked with libnfs' nfs-ls)")
