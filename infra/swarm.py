"""SwarmCluster: the whole cluster as one component, and its outputs (inventory v1, ssh_config).

Named swarm.py, not cluster.py: Pulumi puts infra/ on sys.path, where cluster.py would shadow the
cluster package.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_openstack as openstack

from infra.config import InfraConfig
from infra.hostkeys import HostKeys
from infra.layout import by_role, inventory_document, known_hosts_text, plan_nodes, ssh_config_text
from infra.lb import LoadBalancerNode, LoadBalancerPair
from infra.network import ClusterNetwork
from infra.nodes import NodeContext, SwarmNodes
from infra.security import ClusterSecurity
from infra.storage import StorageNode


class SwarmCluster(pulumi.ComponentResource):
    inventory: pulumi.Output[dict[str, Any]]
    ssh_config: pulumi.Output[str]
    known_hosts: pulumi.Output[str]
    lb_public_ip: pulumi.Output[str]

    def __init__(self, name: str, config: InfraConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("swarmlab:index:SwarmCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        nodes = plan_nodes(config)
        network = ClusterNetwork("network", config, opts=child)
        security = ClusterSecurity("security", config, opts=child)
        host_keys = HostKeys("host-keys", nodes, opts=child)
        ctx = NodeContext(config, network, security, self._key_pair(config, child), host_keys)
        self.swarm_nodes = SwarmNodes("swarm-nodes", ctx, nodes, opts=child)
        lbs = by_role(nodes, "lb")
        self.lb: LoadBalancerNode | LoadBalancerPair = (
            LoadBalancerNode("lb", ctx, lbs[0], opts=child)
            if len(lbs) == 1
            else LoadBalancerPair("lbs", ctx, lbs, opts=child)
        )
        self.storage = StorageNode("storage", ctx, by_role(nodes, "storage")[0], opts=child)
        self.lb_public_ip = self.lb.public_ip
        names = [lb.name for lb in lbs]
        ssh_ips = pulumi.Output.all(*self.lb.ssh_ips).apply(lambda ips: dict(zip(names, ips, strict=True)))
        # Public halves only: these outputs stay plain (no secret goes into them).
        pinned = pulumi.Output.all(self.lb.public_ip, host_keys.public_keys(), ssh_ips)
        self.inventory = pinned.apply(lambda v: inventory_document(config, nodes, v[0], v[1], v[2]))
        self.known_hosts = pinned.apply(lambda v: known_hosts_text(nodes, v[2], v[1]))
        self.ssh_config = ssh_ips.apply(lambda ips: ssh_config_text(config, nodes, ips))
        self.register_outputs(
            {
                "inventory": self.inventory,
                "ssh_config": self.ssh_config,
                "known_hosts": self.known_hosts,
                "lb_public_ip": self.lb_public_ip,
            }
        )

    @staticmethod
    def _key_pair(config: InfraConfig, opts: pulumi.ResourceOptions) -> pulumi.Input[str]:
        """The key pair's name: an existing one, or one made from the configured public key."""
        if config.key_pair is not None:
            return config.key_pair
        keypair = openstack.compute.Keypair(
            "keypair",
            name=f"{config.cluster_name}-key",
            # A public key only: the private key stays on the operator's machine (the provider would
            # mark a cloud-generated one secret, but none is ever generated here).
            public_key=config.public_key,
            opts=opts,
        )
        name: pulumi.Output[str] = keypair.name
        return name
