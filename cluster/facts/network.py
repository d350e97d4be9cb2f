"""A node's addresses: which interface holds an address. For two lbs: where keepalived's configuration puts
the virtual IP (the interface of the lb's private address: ens3 on a VM, eth0 in the lab), and which lb
holds the VIP now (the one whose answer for the VIP is not empty)."""

from __future__ import annotations

from cluster.facts import Fact


def parse_interface(output: str) -> str:
    """`ip -o -4 addr show to ADDRESS` prints `N: IFACE    inet ADDRESS/LEN ...` per match: the first
    interface's name ("" when no interface holds the address), without a veth's `@ifN` suffix."""
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].endswith(":"):
            return words[1].partition("@")[0]
    return ""


def interface_with(address: str) -> Fact[str]:
    """The interface holding `address` on the node, or "" (iproute2 is in every role's provisioning)."""
    return Fact(f"ip -o -4 addr show to {address}", parse_interface)
