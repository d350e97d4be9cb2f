"""The Pulumi program: read the configuration, declare the cluster, export its outputs.

Kept out of __main__.py so the mock tests run exactly what `pulumi up` runs.
"""

from __future__ import annotations

import pulumi

from infra.config import from_pulumi
from infra.swarm import SwarmCluster


def main() -> SwarmCluster:
    # Configuration first: a bad key fails here, before any resource is declared.
    config = from_pulumi()
    cluster = SwarmCluster(config.cluster_name, config)
    pulumi.export("inventory", cluster.inventory)
    pulumi.export("ssh_config", cluster.ssh_config)
    pulumi.export("known_hosts", cluster.known_hosts)
    pulumi.export("lb_public_ip", cluster.lb_public_ip)
    return cluster
