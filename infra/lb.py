"""The lb node: HAProxy and the SSH jump host, and the only node with a public (floating) address."""

from __future__ import annotations

import pulumi
import pulumi_openstack as openstack

from infra.layout import NodeSpec
from infra.nodes import NodeContext, Server, create_server


class LoadBalancerNode(pulumi.ComponentResource):
    server: Server
    public_ip: pulumi.Output[str]

    def __init__(self, name: str, ctx: NodeContext, spec: NodeSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("swarmlab:lb:LoadBalancerNode", name, None, opts)
        self.server = create_server(ctx, spec, self)
        # The association needs the router's gateway to the subnet, hence the dependency.
        after_router = pulumi.ResourceOptions(parent=self, depends_on=[ctx.network.router_interface])
        floating_ip = openstack.networking.FloatingIp(
            f"{spec.name}-fip",
            pool=ctx.config.external_network,
            description=f"swarmlab {ctx.config.cluster_name}: {spec.name}",
            opts=after_router,
        )
        openstack.networking.FloatingIpAssociate(
            f"{spec.name}-fip-associate",
            floating_ip=floating_ip.address,
            port_id=self.server.port.id,
            opts=after_router,
        )
        self.public_ip = floating_ip.address
        self.register_outputs({"public_ip": floating_ip.address, "instance_id": self.server.instance.id})
