"""The storage node (image registry, NFS server) and where the cluster's data lives.

A Cinder volume attached to the storage node, formatted only if it has no filesystem yet and mounted
by UUID at topology.DATA_ROOT (templates/provision/storage.sh.j2, volume section); the NFS export is
its data/ directory, the endpoint the inventory declares (topology.nfs_endpoint). The volume is
protected by default, so `pulumi destroy` cannot delete student data by accident.
"""

from __future__ import annotations

import pulumi
import pulumi_openstack as openstack

from infra.cloudinit import volume_device
from infra.layout import NodeSpec
from infra.nodes import NodeContext, Server, create_server


class StorageNode(pulumi.ComponentResource):
    server: Server
    volume: openstack.blockstorage.Volume

    def __init__(self, name: str, ctx: NodeContext, spec: NodeSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("swarmlab:storage:StorageNode", name, None, opts)
        config = ctx.config
        self.volume = openstack.blockstorage.Volume(
            f"{spec.name}-data",
            name=f"{spec.server_name(config.cluster_name)}-data",
            size=config.storage_size,
            volume_type=config.storage_volume_type,
            description=f"swarmlab {config.cluster_name}: NFS and registry data",
            # protect: `pulumi destroy` stops here instead of deleting the data (docs/cloud.md).
            opts=pulumi.ResourceOptions(parent=self, protect=config.storage_protect),
        )
        self.server = create_server(ctx, spec, self, data_device=self.volume.id.apply(volume_device))
        openstack.compute.VolumeAttach(
            f"{spec.name}-data-attach",
            instance_id=self.server.instance.id,
            volume_id=self.volume.id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"volume_id": self.volume.id, "instance_id": self.server.instance.id})
