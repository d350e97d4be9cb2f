"""keepalived (Debian's, 2.2.7 on bookworm) on two lb nodes: one VRRP instance that holds the cluster's
virtual IP on one of them and moves it when that node or its HAProxy dies.

- **Unicast** to the other lb (unicast_src_ip, unicast_peer): clouds filter multicast, and the security
  group admits VRRP (IP protocol 112) from the lb group only.
- **Health-checked**: a vrrp_script asks HAProxy's stats page on 127.0.0.1; after FALL failures the
  instance goes to FAULT and gives the VIP up, and the other lb takes it within about three adverts.
- **nopreempt, both BACKUP**: a recovered lb does not take the VIP back. Every move loses the requests
  in flight on the old holder, and the two lbs serve alike, so the VIP moves only when its holder fails.
  The priorities still differ, so that when both start at once lb-1 wins the first election.
- **The password** is VRRPv2's PASS authentication (8 characters at most; keepalived truncates longer
  ones): a cluster's generated secret (cluster.credentials.vrrp_password). It travels in clear text
  between the two lbs, so it guards against a stray VRRP speaker, not an attacker on the subnet; the
  security group is what keeps the others out. It is not in this model's repr, and the rendered file
  holds it: the push writes it root's, mode 600 (DAEMON.config_mode), in a directory of mode 700.
- **The check script runs as root** (`script_user root` with `enable_script_security`): Debian 12's
  keepalived 2.2.7 kills its own `keepalived -t` (exit 143, "Terminated") when a script user other than
  root is set (acassen/keepalived#2617 and #2587, fixed in 2.2.8), and `-t` is how the configuration is
  validated before it replaces the running one. The script is curl, root's, in a root-owned directory.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

import topology
from rendering.daemon import DaemonSpec
from rendering.render import render

CONFIG_PATH = "/etc/keepalived/keepalived.conf"
CONFIG_MODE = 0o600  # it holds the VRRP password
PID_FILE = "/run/keepalived.pid"
# VRRPv2's authentication data is 8 bytes: keepalived truncates a longer auth_pass (and says so).
PASSWORD_LENGTH = 8
# First lb wins when both start at once; with nopreempt, nothing else depends on which is higher.
PRIORITIES = (150, 100)
ADVERT_SECONDS = 1
# HAProxy must fail FALL checks in a row (CHECK_SECONDS apart) before its node gives the VIP up, and
# answer RISE in a row before the node may take it again.
CHECK_SECONDS, FALL, RISE = 1, 2, 2
CHECK_TIMEOUT_SECONDS = 2
CHECK_COMMAND = f"/usr/bin/curl -sf -o /dev/null --max-time 1 http://127.0.0.1:{topology.STATS_PORT}/stats"
INSTANCE = "swarmlab"
# What keepalived, a word of its configuration, accepts without quoting, and nothing that could start
# another statement or a comment.
_PASSWORD = re.compile(rf"[A-Za-z0-9_-]{{1,{PASSWORD_LENGTH}}}")
_INTERFACE = re.compile(r"[A-Za-z0-9_.@-]{1,15}")  # a Linux interface name (IFNAMSIZ - 1)

DAEMON = DaemonSpec(
    name="keepalived",
    config_path=CONFIG_PATH,
    pid_file=PID_FILE,
    unit="keepalived",
    # keepalived detaches itself and writes the parent's pid file.
    start=f"keepalived -f {CONFIG_PATH} -p {PID_FILE} </dev/null >/dev/null 2>&1",
    reload="kill -HUP {pid}",  # re-reads the configuration; the VIP stays where it is
    validate="keepalived -t -f {path}",  # exit 0 and silent when valid; each problem on stderr
    ready=f"kill -0 $(head -n1 {PID_FILE})",
    config_mode=CONFIG_MODE,
)


@dataclass(frozen=True)
class KeepalivedConfig:
    """One lb node's view of the pair."""

    cluster: str
    node: str
    interface: str  # where the node's private address is (a fact of the node: ens3 on a VM, eth0 in the lab)
    address: str  # this node's private address: VRRP's source
    peer: str  # the other lb's private address
    vip: str
    prefix_length: int
    priority: int
    virtual_router_id: int
    password: str = field(repr=False)  # never in a repr, a log line or an error
    check_command: str = CHECK_COMMAND
    advert_seconds: int = ADVERT_SECONDS
    check_seconds: int = CHECK_SECONDS
    check_timeout_seconds: int = CHECK_TIMEOUT_SECONDS
    fall: int = FALL
    rise: int = RISE
    instance: str = INSTANCE


def virtual_router_id(cluster: str) -> int:
    """1-255, the same on both lbs, from the cluster's name: two clusters that share a network (where a
    VRRP advert could reach the wrong pair) most likely differ."""
    return 1 + int(hashlib.sha256(cluster.encode()).hexdigest(), 16) % 255


def build(
    *,
    cluster: str,
    lbs: tuple[tuple[str, str], ...],
    node: str,
    vip: str,
    cidr: ipaddress.IPv4Network,
    interface: str,
    password: str,
) -> KeepalivedConfig:
    """The configuration of `node`, one of the two `lbs` ((name, private address), lb-1 first)."""
    if len(lbs) != 2:
        raise ValueError(f"keepalived pairs two lb nodes, not {len(lbs)}: {', '.join(n for n, _ in lbs)}")
    names = [name for name, _ in lbs]
    if node not in names:
        raise ValueError(f"{node} is not an lb node ({', '.join(names)})")
    if ipaddress.IPv4Address(vip) not in cidr or vip in (address for _, address in lbs):
        raise ValueError(f"the virtual IP {vip} must be a free address of {cidr}")
    if not _INTERFACE.fullmatch(interface):
        raise ValueError(f"{interface!r} is not a network interface name (as `ip -o addr` prints one)")
    if not _PASSWORD.fullmatch(password):
        # The value itself stays out of the message.
        raise ValueError(
            f"the VRRP password must be 1-{PASSWORD_LENGTH} letters, digits, '-' or '_' "
            "(cluster.credentials.vrrp_password makes one)"
        )
    index = names.index(node)
    return KeepalivedConfig(
        cluster=cluster,
        node=node,
        interface=interface,
        address=lbs[index][1],
        peer=lbs[1 - index][1],
        vip=vip,
        prefix_length=cidr.prefixlen,
        priority=PRIORITIES[index],
        virtual_router_id=virtual_router_id(cluster),
        password=password,
    )


def render_config(config: KeepalivedConfig) -> str:
    return render("keepalived/keepalived.conf.j2", {"config": config})
