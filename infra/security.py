"""Security groups, least privilege. The policy is a table of rules (pure, reviewed and tested as data);
the component turns each row into one SecGroupRule.

Groups, and the roles whose ports carry them:
  lb       lb node(s): SSH and HAProxy stats from admin_cidrs, HTTP/HTTPS from public_cidrs, HAProxy's
           Prometheus exporter from the cluster subnet; with two lbs, VRRP (IP protocol 112) only from
           the lb group (the other lb)
  private  every other node: SSH only from the lb group (the jump host)
  swarm    managers and workers: Swarm control, gossip and VXLAN only from the cluster subnet; engine
           metrics (Prometheus on a worker scrapes them) only from the cluster subnet
  workers  workers: the edge services' host-mode ports only from the lb group (HAProxy)
  managers managers: the cluster map (a container on each manager) only from the lb group (HAProxy)
  storage  storage node: NFS only from the workers group (the only NFS clients), the registry from the
           cluster subnet (every engine pulls; managers resolve image digests at deploy)
Default rules are deleted, so nothing is open that is not in the table; egress stays open (apt, images).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_openstack as openstack

from infra.config import InfraConfig
from topology import (
    ENGINE_METRICS_PORT,
    HTTP_PORT,
    HTTPS_PORT,
    LB_METRICS_PORT,
    MAP_PORT,
    NFS_PORT,
    REGISTRY_PORT,
    ROUTE_PORTS,
    SSH_PORT,
    STATS_PORT,
    SWARM_GOSSIP_PORT,
    SWARM_PORT,
    VXLAN_PORT,
)

# VRRP by its IP protocol number: Neutron knows the name "vrrp" only in newer releases, the number in all.
VRRP_PROTOCOL = "112"
ESP_PROTOCOL = "esp"  # IP protocol 50
LB_GROUP = "@lb"  # a rule source meaning "ports in the lb group" (remote_group_id)
WORKERS_GROUP = "@workers"  # ports in the workers group
ANYWHERE = "0.0.0.0/0"
GROUPS_BY_ROLE: dict[str, tuple[str, ...]] = {
    "lb": ("lb",),
    "manager": ("private", "swarm", "managers"),
    "worker": ("private", "swarm", "workers"),
    "storage": ("private", "storage"),
}
GROUPS = ("lb", "private", "swarm", "workers", "managers", "storage")


@dataclass(frozen=True)
class Rule:
    group: str
    protocol: str | None  # None: any protocol (egress only)
    ports: tuple[int, int] | None
    source: str  # a CIDR, or a group ("@lb", "@workers")
    why: str
    direction: str = "ingress"

    @property
    def key(self) -> str:
        """A stable resource name: the same row keeps the same name across runs."""
        ports = f"{self.ports[0]}-{self.ports[1]}" if self.ports else "all"
        source = f"{self.source[1:]}-group" if self.source.startswith("@") else self.source.replace("/", "_")
        return f"{self.group}-{self.direction}-{self.protocol or 'any'}-{ports}-{source}"


def _port(group: str, protocol: str, port: int, sources: list[str], why: str) -> list[Rule]:
    return [Rule(group, protocol, (port, port), source, why) for source in sources]


def policy(config: InfraConfig) -> tuple[Rule, ...]:
    """Every rule of the cluster's security groups."""
    cluster = [str(config.private_cidr)]
    admin = [str(c) for c in config.admin_cidrs]
    public = [str(c) for c in config.public_cidrs]
    return (
        *_port("lb", "tcp", SSH_PORT, admin, "SSH to the jump host"),
        *_port("lb", "tcp", HTTP_PORT, public, "HTTP"),
        *_port("lb", "tcp", HTTPS_PORT, public, "HTTPS"),
        *_port("lb", "tcp", STATS_PORT, admin, "HAProxy stats"),
        *_port("lb", "tcp", LB_METRICS_PORT, cluster, "HAProxy's Prometheus exporter, for Prometheus"),
        *_port("private", "tcp", SSH_PORT, [LB_GROUP], "SSH through the jump host only"),
        *_port("swarm", "tcp", SWARM_PORT, cluster, "Swarm cluster management"),
        *_port("swarm", "tcp", SWARM_GOSSIP_PORT, cluster, "Swarm node gossip"),
        *_port("swarm", "udp", SWARM_GOSSIP_PORT, cluster, "Swarm node gossip"),
        *_port("swarm", "udp", VXLAN_PORT, cluster, "VXLAN overlay data"),
        *_port("swarm", "tcp", ENGINE_METRICS_PORT, cluster, "Docker engine metrics, for Prometheus"),
        Rule("workers", "tcp", ROUTE_PORTS, LB_GROUP, "edge services published in host mode, for HAProxy"),
        *_port("managers", "tcp", MAP_PORT, [LB_GROUP], "the cluster map on each manager, for HAProxy"),
        # The export admits the workers' addresses only (nfs-ganesha's client list); so does the group.
        *_port("storage", "tcp", NFS_PORT, [WORKERS_GROUP], "NFS v4, for the workers"),
        *_port("storage", "tcp", REGISTRY_PORT, cluster, "image registry"),
        Rule("lb", None, None, ANYWHERE, "outbound", direction="egress"),
        Rule("private", None, None, ANYWHERE, "outbound", direction="egress"),
        # Encrypted overlays (the prod values' `encrypted_overlays`) carry VXLAN inside IPsec ESP (IP
        # protocol 50) between the nodes that run tasks: the workers (the managers are drained).
        *(
            (Rule("workers", ESP_PROTOCOL, None, WORKERS_GROUP, "ESP: the encrypted overlays' IPsec, between workers"),)
            if config.overlay_encryption
            else ()
        ),
        # Two lbs: keepalived's VRRP adverts (IP protocol 112, unicast to the peer), from the other lb only.
        *(
            (Rule("lb", VRRP_PROTOCOL, None, LB_GROUP, "VRRP between the two lbs (keepalived)"),)
            if config.lb_count == 2
            else ()
        ),
    )


class ClusterSecurity(pulumi.ComponentResource):
    group_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, config: InfraConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("swarmlab:security:ClusterSecurity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        groups = {
            group: openstack.networking.SecGroup(
                f"sg-{group}",
                name=f"{config.cluster_name}-{group}",
                description=f"swarmlab {config.cluster_name}: {group}",
                delete_default_rules=True,
                opts=child,
            )
            for group in GROUPS
        }
        self.group_ids = {group: sg.id for group, sg in groups.items()}
        for rule in policy(config):
            self._rule(rule, groups, child)
        self.register_outputs({f"{group}_group_id": sg.id for group, sg in groups.items()})

    def _rule(self, rule: Rule, groups: dict[str, openstack.networking.SecGroup], opts: pulumi.ResourceOptions) -> None:
        from_group = rule.source.startswith("@")
        openstack.networking.SecGroupRule(
            f"rule-{rule.key}",
            security_group_id=groups[rule.group].id,
            direction=rule.direction,
            ethertype="IPv4",
            protocol=rule.protocol,
            port_range_min=rule.ports[0] if rule.ports else None,
            port_range_max=rule.ports[1] if rule.ports else None,
            remote_group_id=groups[rule.source[1:]].id if from_group else None,
            remote_ip_prefix=None if from_group else rule.source,
            description=rule.why,
            opts=opts,
        )

    def ids_for(self, role: str) -> list[pulumi.Output[str]]:
        return [self.group_ids[group] for group in GROUPS_BY_ROLE[role]]
