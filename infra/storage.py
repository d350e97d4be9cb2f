"""The storage node (image registry, NFS server) and where the cluster's data lives.

storage_kind `server` (default): a Cinder volume attached to the storage node, formatted only if it has
no filesystem yet and mounted by UUID (templates/provision/storage.sh.j2, volume section). The volume
is protected by default, so `pulumi destroy` cannot delete student data by accident.
storage_kind `manila`: a managed NFS share on the cluster subnet instead of the volume; the storage
node still runs the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_openstack as openstack

from infra.cloudinit import user_data, volume_device
from infra.nodes import NodeContext, Server, create_server
from infra.topology import NodeSpec, default_nfs_endpoint


def _preferred_path(locations: Sequence[Any] | None) -> str:
    """The export path clients should mount: the one Manila marks preferred, else the first."""
    if not locations:
        raise ValueError("the Manila share reports no export location")
    preferred = [loc for loc in locations if str(loc.preferred).lower() == "true"]
    return str((preferred or list(locations))[0].path)


class StorageNode(pulumi.ComponentResource):
    server: Server
    nfs_endpoint: pulumi.Output[str]
    volume: openstack.blockstorage.Volume | None
    share: openstack.sharedfilesystem.Share | None

    def __init__(self, name: str, ctx: NodeContext, spec: NodeSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("swarmlab:storage:StorageNode", name, None, opts)
        self.volume = None
        self.share = None
        if ctx.config.storage_kind == "server":
            self._with_volume(ctx, spec)
        else:
            self._with_share(ctx, spec)
        self.register_outputs({"nfs_endpoint": self.nfs_endpoint, "instance_id": self.server.instance.id})

    def _with_volume(self, ctx: NodeContext, spec: NodeSpec) -> None:
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
        text = self.volume.id.apply(lambda volume_id: user_data(config, spec, volume_device(volume_id)))
        self.server = create_server(ctx, spec, self, user_data_text=text)
        openstack.compute.VolumeAttach(
            f"{spec.name}-data-attach",
            instance_id=self.server.instance.id,
            volume_id=self.volume.id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.nfs_endpoint = pulumi.Output.from_input(default_nfs_endpoint(config))

    def _with_share(self, ctx: NodeContext, spec: NodeSpec) -> None:
        config = ctx.config
        child = pulumi.ResourceOptions(parent=self)
        self.server = create_server(ctx, spec, self)
        share_network = openstack.sharedfilesystem.ShareNetwork(
            f"{spec.name}-share-network",
            name=f"{config.cluster_name}-share-network",
            neutron_net_id=ctx.network.network_id,
            neutron_subnet_id=ctx.network.subnet_id,
            opts=child,
        )
        self.share = openstack.sharedfilesystem.Share(
            f"{spec.name}-share",
            name=f"{config.cluster_name}-data",
            share_proto="NFS",
            size=config.storage_size,
            share_type=config.manila_share_type,
            share_network_id=share_network.id,
            opts=pulumi.ResourceOptions(parent=self, protect=config.storage_protect),
        )
        # Read-write for the cluster subnet only, the same reach as the server kind's export.
        openstack.sharedfilesystem.ShareAccess(
            f"{spec.name}-share-access",
            share_id=self.share.id,
            access_type="ip",
            access_to=str(config.private_cidr),
            access_level="rw",
            opts=child,
        )
        self.nfs_endpoint = self.share.export_locations.apply(_preferred_path)
