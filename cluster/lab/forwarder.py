"""The lab's VIP forwarder (two lbs), pure: what stands in for a cloud's floating IP.

With one lb the lb container publishes the lab's ports. Two lb containers cannot both publish them,
and the port must follow the VIP anyway: a small container (the lab's node image, whose HAProxy
forwards TCP) publishes them instead and forwards each to VIP:port, so whichever lb keepalived gave the
VIP answers, as behind a floating IP. TLS still ends on the lbs.

- **http, https, stats**: the VIP only. A connection made while the VIP moves is retried
  (RETRIES x CONNECT_SECONDS), as a client's TCP stack would retry a SYN to a floating IP; one in flight
  on an lb that dies is lost, as on a cloud.
- **ssh**: the VIP's holder when its HAProxy answers there, else each lb at its own address (lb-1
  first). Before `fab keepalived` no lb holds the VIP, and the tasks that set keepalived up reach the
  lbs through this port: without the fallback the lab could never be bootstrapped. The runner still
  holds whichever answers to its own pinned key (cluster/runners.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import topology
from cluster.config import Config
from cluster.inventory import Role
from cluster.lab.layout import lab_nodes, vip
from rendering.render import render

CONNECT_SECONDS = 1
# keepalived's takeover after its holder dies: 3 adverts (1 s) and a skew below 1 s; 8 tries cover it twice.
RETRIES = 8
IDLE_TIMEOUT = "1h"


@dataclass(frozen=True)
class ForwardedPort:
    name: str
    port: int  # the same inside the forwarder and on the lbs
    fallback: bool = False  # to each lb's own address while the VIP does not serve


@dataclass(frozen=True)
class ForwardedLb:
    name: str
    ip: str


@dataclass(frozen=True)
class ForwarderConfig:
    cluster: str
    vip: str
    lbs: tuple[ForwardedLb, ...]
    ports: tuple[ForwardedPort, ...]
    stats_port: int = topology.STATS_PORT
    connect_seconds: int = CONNECT_SECONDS
    retries: int = RETRIES
    idle_timeout: str = IDLE_TIMEOUT


PORTS = (
    ForwardedPort("http", topology.HTTP_PORT),
    ForwardedPort("https", topology.HTTPS_PORT),
    ForwardedPort("ssh", topology.SSH_PORT, fallback=True),
    ForwardedPort("stats", topology.STATS_PORT),
)


def forwarder_config(config: Config) -> ForwarderConfig:
    address = vip(config)
    if address is None:
        raise ValueError(f"lb_count={config.lb_count}: the VIP forwarder stands in for two lbs' floating IP only")
    lbs = tuple(ForwardedLb(n.name, n.ip) for n in lab_nodes(config) if n.role == Role.LB.value)
    return ForwarderConfig(cluster=config.cluster, vip=address, lbs=lbs, ports=PORTS)


def render_forwarder(config: ForwarderConfig) -> str:
    return render("lab/forwarder.cfg.j2", config)
