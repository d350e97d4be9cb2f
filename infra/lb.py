"""The lb node(s): HAProxy and the SSH jump host, the only public (floating) addresses.

One lb (the default): the floating IP on its port, for HTTP(S) and SSH. Two (lb_count 2): both in an
anti-affinity server group, a port of its own for the virtual IP they share (unbound: it only reserves the
address, and tells OVN the address is virtual), that address allowed on both lb ports
(allowed_address_pairs: keepalived puts it on whichever is master), and the floating IP on the VIP's port,
so the public address follows the VIP. Each lb also gets a floating IP of its own, for SSH: the VIP is
held only once keepalived runs and HAProxy answers, both configured over SSH by `fab bootstrap`, so a
fresh pair has no other way in; and the runner reaches a given lb, or the other when one is down.
"""

from __future__ import annotations

import pulumi
import pulumi_openstack as openstack

from infra.layout import NodeSpec
from infra.nodes import NodeContext, Server, create_server


def _floating_ip(
    name: str, ctx: NodeContext, port_id: pulumi.Input[str], parent: pulumi.Resource
) -> pulumi.Output[str]:
    """A floating IP from the external network, associated with `port_id`; its address."""
    # The association needs the router's gateway to the subnet, hence the dependency.
    after_router = pulumi.ResourceOptions(parent=parent, depends_on=[ctx.network.router_interface])
    floating_ip = openstack.networking.FloatingIp(
        f"{name}-fip",
        pool=ctx.config.external_network,
        description=f"swarmlab {ctx.config.cluster_name}: {name}",
        opts=after_router,
    )
    openstack.networking.FloatingIpAssociate(
        f"{name}-fip-associate", floating_ip=floating_ip.address, port_id=port_id, opts=after_router
    )
    address: pulumi.Output[str] = floating_ip.address
    return address


class LoadBalancerNode(pulumi.ComponentResource):
    server: Server
    public_ip: pulumi.Output[str]
    ssh_ips: tuple[pulumi.Output[str], ...]  # where SSH reaches each lb: here its one floating IP

    def __init__(self, name: str, ctx: NodeContext, spec: NodeSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("swarmlab:lb:LoadBalancerNode", name, None, opts)
        self.server = create_server(ctx, spec, self)
        self.public_ip = _floating_ip(spec.name, ctx, self.server.port.id, self)
        self.ssh_ips = (self.public_ip,)
        self.register_outputs({"public_ip": self.public_ip, "instance_id": self.server.instance.id})


class LoadBalancerPair(pulumi.ComponentResource):
    """Two lb nodes sharing a virtual IP; keepalived (VRRP, allowed between them by the lb group) moves it."""

    servers: tuple[Server, ...]
    server_group: openstack.compute.ServerGroup
    vip_port: openstack.networking.Port
    public_ip: pulumi.Output[str]  # the VIP's: HTTP(S)
    ssh_ips: tuple[pulumi.Output[str], ...]  # each lb's own, in the specs' order: SSH

    def __init__(
        self, name: str, ctx: NodeContext, specs: tuple[NodeSpec, ...], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("swarmlab:lb:LoadBalancerPair", name, None, opts)
        cluster, vip = ctx.config.cluster_name, ctx.config.vip
        if vip is None or len(specs) != 2:
            raise ValueError(f"a pair of lbs needs lb_count 2 and two lb nodes, not {len(specs)}")
        child = pulumi.ResourceOptions(parent=self)
        # Like the managers' and workers' groups: with anti-affinity, one hypervisor lost takes one lb only.
        self.server_group = openstack.compute.ServerGroup(
            "lbs-group", name=f"{cluster}-lbs", policies=ctx.config.server_group_policy, opts=child
        )
        self.servers = tuple(
            create_server(ctx, spec, self, server_group=self.server_group, address_pairs=(vip,)) for spec in specs
        )
        self.vip_port = openstack.networking.Port(
            "vip-port",
            name=f"{cluster}-vip-port",
            network_id=ctx.network.network_id,
            fixed_ips=[{"subnet_id": ctx.network.subnet_id, "ip_address": vip}],
            # The lb's groups, as on the lb ports: the traffic the floating IP brings is the lb's.
            security_group_ids=ctx.security.ids_for("lb"),
            admin_state_up=True,
            opts=child,
        )
        self.public_ip = _floating_ip("vip", ctx, self.vip_port.id, self)
        self.ssh_ips = tuple(
            _floating_ip(f"{spec.name}-ssh", ctx, server.port.id, self)
            for spec, server in zip(specs, self.servers, strict=True)
        )
        self.register_outputs(
            {
                "public_ip": self.public_ip,
                "ssh_ips": list(self.ssh_ips),
                "vip": vip,
                "instance_ids": [s.instance.id for s in self.servers],
                "server_group": self.server_group.id,
            }
        )
