"""Tenant isolation, pure: the DOCKER-USER rules that keep containers on a Docker node away from the
data tier, the script that puts them in place, and the systemd drop-in that runs it.

A container's traffic to another machine is forwarded by its node (and masqueraded as the node's
address, which the NFS export and the registry trust); Docker sends every forwarded packet through the
DOCKER-USER chain first, and keeps that chain's rules when the engine restarts. The node's own traffic
(mounts, pulls, Swarm, VXLAN) is not forwarded and never meets these rules.

Shared by cluster/ (the lab's nodes, the `isolation` task) and infra/ (cloud-init), so it imports neither.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import topology
from rendering.render import render

CHAIN = "DOCKER-USER"
COMMENT_PREFIX = "swarmlab-isolation:"


@dataclass(frozen=True)
class Rule:
    """One DOCKER-USER rule: refuse a new forwarded connection (a container's, or one from another
    machine to a published port) that `match` matches. Its comment names it, so a node's rules can be
    read back (`iptables -S`) and compared by name."""

    name: str
    match: tuple[str, ...]
    why: str

    @property
    def comment(self) -> str:
        return f"{COMMENT_PREFIX}{self.name}"

    @property
    def args(self) -> tuple[str, ...]:
        """The rule's arguments after the chain, as `iptables -C/-I DOCKER-USER` takes them. Only NEW
        connections: answers to connections made to a container (a published port) pass."""
        return (
            *self.match,
            *("-m", "conntrack", "--ctstate", "NEW"),
            *("-m", "comment", "--comment", self.comment),
            *("-j", "REJECT"),
        )


def _address(host: str, what: str = "data-tier host") -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(
            f"{what} {host!r} is not an IPv4 address: the isolation rules name addresses "
            "(give the inventory's registry and nfs endpoints and its nodes' private_ip as addresses)"
        ) from None


def swarm_ports(port: int) -> str:
    """Swarm's gossip port and another (2377/tcp, or VXLAN 4789/udp), as `--dports` takes them."""
    return f"{port},{topology.SWARM_GOSSIP_PORT}"


def from_lbs_only(name: str, cidr: ipaddress.IPv4Network, ports: str, lbs: Sequence[ipaddress.IPv4Address]) -> Rule:
    """Refuse a new connection to `ports` (as the node network's address was asked, before Docker's DNAT
    to the container) from anyone but the lb nodes: HAProxy is the one client of the services' and the
    map's published ports, which sit behind its admin check (Prometheus, the map) or are the lab's
    mail sink. Two lbs: iptables negates one address per match, so one in `-s`, one in `--ctorigsrc`."""
    others = ("-m", "conntrack", "!", "--ctorigsrc", f"{lbs[1]}/32") if len(lbs) == 2 else ("-m", "conntrack")
    return Rule(
        name,
        ("-p", "tcp", "!", "-s", f"{lbs[0]}/32", *others, "--ctorigdst", str(cidr), "--ctorigdstport", ports),
        f"{ports}/tcp in {cidr} answers the lb nodes only ({', '.join(map(str, lbs))})",
    )


def isolation_rules(
    node_cidr: str | ipaddress.IPv4Network, data_hosts: Iterable[str], lb_hosts: Iterable[str]
) -> tuple[Rule, ...]:
    """The rules every Docker node carries: no container connection to a data-tier host at all (the
    storage node: NFS 2049 and its helpers, the registry 5000, its SSH), to any node's SSH or Swarm
    ports (2377, 7946, VXLAN 4789) in the node network, or to the cloud's metadata service; and no one
    but the lb nodes reaches the services' published ports (8000-8099) or the cluster map's (9080).
    Everything else (the overlays, Prometheus scraping the engines and HAProxy, DNS, the Internet) is
    untouched."""
    cidr = ipaddress.IPv4Network(node_cidr)
    hosts = sorted({_address(h) for h in data_hosts})
    if not hosts:
        raise ValueError("no data-tier host given: the isolation rules need the storage node's address")
    lbs = sorted({_address(h, "lb") for h in lb_hosts})
    if len(lbs) not in topology.LB_COUNTS:
        raise ValueError(f"{len(lbs)} lb addresses given: the isolation rules need the one or two lb nodes'")
    rules = [
        Rule(
            f"data-{host}",
            ("-d", f"{host}/32"),
            f"containers reach nothing on {host} (NFS, the registry, SSH)",
        )
        for host in hosts
    ]
    rules.append(
        Rule(
            "ssh",
            ("-d", str(cidr), "-p", "tcp", "--dport", str(topology.SSH_PORT)),
            f"containers reach no node's SSH in {cidr}",
        )
    )
    # The swarm's own ports: only the engines (the node's traffic, never forwarded) talk on them; a
    # container that could would send forged VXLAN frames into any overlay, the database's among them.
    rules.append(
        Rule(
            "swarm-tcp",
            ("-d", str(cidr), "-p", "tcp", "-m", "multiport", "--dports", swarm_ports(topology.SWARM_PORT)),
            f"containers reach no node's Swarm control ports in {cidr}",
        )
    )
    rules.append(
        Rule(
            "swarm-udp",
            ("-d", str(cidr), "-p", "udp", "-m", "multiport", "--dports", swarm_ports(topology.VXLAN_PORT)),
            f"containers send no node gossip or VXLAN in {cidr}",
        )
    )
    rules.append(
        Rule(
            "metadata",
            ("-d", f"{topology.METADATA_ADDRESS}/32"),
            f"containers reach no metadata service ({topology.METADATA_ADDRESS}: the server's user data)",
        )
    )
    low, high = topology.ROUTE_PORTS
    rules.append(from_lbs_only("edge-ports", cidr, f"{low}:{high}", lbs))
    rules.append(from_lbs_only("map-port", cidr, str(topology.MAP_PORT), lbs))
    return tuple(rules)


@dataclass(frozen=True)
class ScriptInput:
    chain: str
    rules: tuple[tuple[str, str], ...]  # (why, the arguments as one shell-quoted line)


def isolation_script(rules: tuple[Rule, ...]) -> str:
    """/usr/local/sbin/swarmlab-isolate: each rule checked (`iptables -C`) before it is inserted, so a
    second run changes nothing and says so."""
    return render(
        "isolation/swarmlab-isolate.sh.j2",
        ScriptInput(CHAIN, tuple((rule.why, shlex.join(rule.args)) for rule in rules)),
    )


def cluster_isolation_script(node_cidr: str | ipaddress.IPv4Network, lb_count: int) -> str:
    """The script of a cluster whose data tier is its storage node and whose lb nodes are at the topology's
    addresses (the lab and cloud-init put it on each node at creation; the `isolation` task renders the
    same from the inventory)."""
    cidr = ipaddress.IPv4Network(node_cidr)
    return isolation_script(isolation_rules(cidr, [topology.storage_ip(cidr)], topology.lb_ips(cidr, lb_count)))


def isolation_dropin() -> str:
    """The docker.service drop-in that runs the script each time the engine starts (a reboot empties
    the kernel's tables; dockerd itself keeps DOCKER-USER's rules across its own restarts)."""
    return render("isolation/docker-dropin.conf.j2", {"script": topology.ISOLATION_SCRIPT})
