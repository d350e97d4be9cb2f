"""What each role installs: the provisioning scripts rendered for a role (pure).

Shared by cluster/ (lab images) and infra/ (cloud-init), so it imports neither; the facts it renders
(paths, ports) come from topology.
"""

from __future__ import annotations

from dataclasses import dataclass

import topology
from rendering.render import render


@dataclass(frozen=True)
class ProvisionInput:
    role: str
    debian_mirror: str = "http://deb.debian.org/debian"
    debian_suite: str = "bookworm"
    # The storage node's layout, from topology: where its data lives, the NFS export, the registry's port
    # and data, nfs-ganesha's run directory.
    data_root: str = topology.DATA_ROOT
    export_dir: str = topology.EXPORT_DIR
    registry_port: int = topology.REGISTRY_PORT
    registry_data_dir: str = topology.REGISTRY_DATA_DIR
    ganesha_run_dir: str = topology.GANESHA_RUN_DIR
    # An lb of a pair (lb_count 2) also installs keepalived, which holds the pair's virtual IP.
    keepalived: bool = False


@dataclass(frozen=True)
class DaemonJsonInput:
    metrics_addr: str | None = None  # "ip:port" of the engine's Prometheus endpoint; None: no endpoint


ROLES = topology.ROLES


def provision_script(
    role: str,
    debian_mirror: str = "http://deb.debian.org/debian",
    debian_suite: str = "bookworm",
    *,
    lb_count: int = 1,
) -> str:
    """The shell script that makes a plain Debian machine into a node of this role (of a cluster with
    `lb_count` lb nodes: with two, the lbs install keepalived too)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    keepalived = role == "lb" and lb_count == 2
    return render(f"provision/{role}.sh.j2", ProvisionInput(role, debian_mirror, debian_suite, keepalived=keepalived))


def daemon_json(metrics_ip: str | None = None) -> str:
    """/etc/docker/daemon.json of a Docker node. No `insecure-registries`: the cluster registry serves
    TLS, and each engine trusts the cluster CA for it alone (/etc/docker/certs.d, from `fab registry`).

    With `metrics_ip` (a swarm node's private address) the engine serves its Prometheus metrics
    there, on the cluster network only: never on 0.0.0.0, so no public interface exposes them.
    """
    metrics = f"{metrics_ip}:{topology.ENGINE_METRICS_PORT}" if metrics_ip else None
    return render("docker/daemon.json.j2", DaemonJsonInput(metrics))


def engine_metrics_ip(role: str, private_ip: str) -> str | None:
    """Where a node's engine serves metrics: swarm nodes only (the lab and cloud-init agree through this)."""
    return private_ip if role in topology.SWARM_ROLES else None
