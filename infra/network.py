"""The private network: one network, one subnet, a router with a gateway on the external network."""

from __future__ import annotations

import pulumi
import pulumi_openstack as openstack

from infra.config import InfraConfig


class ClusterNetwork(pulumi.ComponentResource):
    network_id: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    router_interface: openstack.networking.RouterInterface

    def __init__(self, name: str, config: InfraConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("swarmlab:network:ClusterNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = config.cluster_name
        external = openstack.networking.get_network_output(
            name=config.external_network, external=True, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        network = openstack.networking.Network(f"{name}-net", name=f"{prefix}-net", admin_state_up=True, opts=child)
        first, last = config.allocation_pool
        subnet = openstack.networking.Subnet(
            f"{name}-subnet",
            name=f"{prefix}-subnet",
            network_id=network.id,
            cidr=str(config.private_cidr),
            ip_version=4,
            gateway_ip=str(config.address(1)),
            # Kept above the nodes' fixed addresses, so DHCP ports never take one of them.
            allocation_pools=[{"start": str(first), "end": str(last)}],
            dns_nameservers=[str(server) for server in config.dns_servers],
            opts=child,
        )
        router = openstack.networking.Router(
            f"{name}-router", name=f"{prefix}-router", external_network_id=external.id, opts=child
        )
        self.router_interface = openstack.networking.RouterInterface(
            f"{name}-router-interface", router_id=router.id, subnet_id=subnet.id, opts=child
        )
        self.network_id = network.id
        self.subnet_id = subnet.id
        self.register_outputs({"network_id": network.id, "subnet_id": subnet.id, "router_id": router.id})
