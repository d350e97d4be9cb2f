"""Servers: how any node is made (a port with a fixed address, then an instance on it), and the Swarm
nodes, managers and workers, each role in its own anti-affinity server group."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_openstack as openstack

from infra.cloudinit import HostKeyText, user_data
from infra.config import InfraConfig
from infra.hostkeys import HostKeys
from infra.layout import NodeSpec, by_role
from infra.network import ClusterNetwork
from infra.security import ClusterSecurity


@dataclass(frozen=True)
class NodeContext:
    """What every node needs from the rest of the stack."""

    config: InfraConfig
    network: ClusterNetwork
    security: ClusterSecurity
    key_pair: pulumi.Input[str]
    host_keys: HostKeys


@dataclass(frozen=True)
class Server:
    spec: NodeSpec
    port: openstack.networking.Port
    instance: openstack.compute.Instance


def node_user_data(ctx: NodeContext, spec: NodeSpec, data_device: pulumi.Output[str] | None) -> pulumi.Output[str]:
    """The node's cloud-init document, a secret: it carries the node's private host key."""
    key = ctx.host_keys.keys[spec.name]
    device: pulumi.Output[str | None] = data_device if data_device is not None else pulumi.Output.from_input(None)
    text = pulumi.Output.all(key.private_openssh, key.public_openssh, device).apply(
        lambda values: user_data(ctx.config, spec, HostKeyText(values[0], values[1]), values[2])
    )
    return pulumi.Output.secret(text)


def create_server(
    ctx: NodeContext,
    spec: NodeSpec,
    parent: pulumi.Resource,
    *,
    server_group: openstack.compute.ServerGroup | None = None,
    data_device: pulumi.Output[str] | None = None,
    address_pairs: tuple[str, ...] = (),
) -> Server:
    """A port at the node's fixed address carrying its role's security groups, and the instance on it.

    address_pairs: other addresses the port may send from and receive (a VIP keepalived may put on the
    node): Neutron's anti-spoofing drops them otherwise."""
    cluster = ctx.config.cluster_name
    child = pulumi.ResourceOptions(parent=parent)
    port = openstack.networking.Port(
        f"{spec.name}-port",
        name=f"{spec.server_name(cluster)}-port",
        network_id=ctx.network.network_id,
        fixed_ips=[{"subnet_id": ctx.network.subnet_id, "ip_address": spec.ip}],
        security_group_ids=ctx.security.ids_for(spec.role),
        admin_state_up=True,
        allowed_address_pairs=[{"ip_address": ip} for ip in address_pairs] or None,
        opts=child,
    )
    instance = openstack.compute.Instance(
        spec.name,
        name=spec.server_name(cluster),
        image_name=ctx.config.image,
        flavor_name=spec.flavor,
        key_pair=ctx.key_pair,
        availability_zone=spec.availability_zone,
        networks=[{"port": port.id}],
        user_data=node_user_data(ctx, spec, data_device),
        scheduler_hints=[{"group": server_group.id}] if server_group is not None else None,
        metadata={"swarmlab_cluster": cluster, "swarmlab_role": spec.role},
        # Provisioning installs packages at first boot: the router must route before the server starts.
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[ctx.network.router_interface]),
    )
    return Server(spec, port, instance)


class SwarmNodes(pulumi.ComponentResource):
    """Managers and workers. Each role's servers share a server group, so no two land on one hypervisor."""

    servers: tuple[Server, ...]
    server_groups: dict[str, openstack.compute.ServerGroup]

    def __init__(
        self, name: str, ctx: NodeContext, nodes: tuple[NodeSpec, ...], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("swarmlab:nodes:SwarmNodes", name, None, opts)
        self.server_groups = {}
        servers: list[Server] = []
        for role in ("manager", "worker"):
            group = openstack.compute.ServerGroup(
                f"{role}s-group",
                name=f"{ctx.config.cluster_name}-{role}s",
                policies=ctx.config.server_group_policy,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.server_groups[role] = group
            servers += [create_server(ctx, spec, self, server_group=group) for spec in by_role(nodes, role)]
        self.servers = tuple(servers)
        self.register_outputs(
            {
                "servers": {s.spec.name: s.instance.id for s in self.servers},
                "server_groups": {role: group.id for role, group in self.server_groups.items()},
            }
        )
