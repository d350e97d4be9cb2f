"""The keepalived task (two lbs only): each lb's keepalived.conf rendered from the inventory (its own
address, the other lb's, the VIP on the interface that holds its private address) and the cluster's
VRRP password, validated with `keepalived -t` on the node, swapped in, then keepalived reloaded or
started. After HAProxy: the VRRP check asks HAProxy's stats page, so an lb without HAProxy gives the
VIP up at once.

The password goes only into the file (written over SFTP, mode 600, in a directory of mode 700): it is
in no command line, no plan's printed form and no error (the executor masks it in command output)."""

from __future__ import annotations

import keepalived.model as keepalived
from cluster.credentials import VRRP_PASSWORD, vrrp_password
from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.daemons import daemon_facts
from cluster.facts.network import interface_with
from cluster.operations import Plan
from cluster.plans.daemon import in_private_directory, on_node, plan_push
from cluster.session import Session

CONFIG_DIR = keepalived.CONFIG_PATH.rsplit("/", 1)[0]


def configure_keepalived(session: Session) -> None:
    """keepalived on both lbs of a pair; with one lb (a flow skips the step then) it says so and does nothing."""
    inventory = session.inventory
    lbs = inventory.lbs
    vip = inventory.network.vip
    names = ", ".join(lb.name for lb in lbs)
    if not inventory.lb_pair or vip is None:
        with session.phase("keepalived", f"keepalived on a pair of lb nodes ({names} here)") as p:
            p.note("one lb node, no virtual IP: keepalived is not used (lb_count: 2 makes a pair)")
        return
    with session.phase("keepalived", f"keepalived on {names}: the virtual IP {vip}; render, validate, swap in") as p:
        password = vrrp_password(session.state.credentials)
        pair = tuple((lb.name, str(lb.private_ip)) for lb in lbs)
        daemon = keepalived.DAEMON
        plan = Plan()
        for lb in lbs:
            interface = read(session.runner, lb, interface_with(str(lb.private_ip)))
            if not interface:
                raise SwarmlabError(
                    f"on {lb.name}: no interface holds its private address {lb.private_ip} "
                    f"(`{interface_with(str(lb.private_ip)).command}` printed nothing), so keepalived has no "
                    "interface to put the virtual IP on. Fix: the inventory's private_ip of this node"
                )
            try:
                config = keepalived.build(
                    cluster=inventory.cluster,
                    lbs=pair,
                    node=lb.name,
                    vip=str(vip),
                    cidr=inventory.network.cidr,
                    interface=interface,
                    password=password,
                )
            except ValueError as error:  # its messages never hold the password
                raise SwarmlabError(f"keepalived on {lb.name}: {error}") from None
            facts = read(session.runner, lb, daemon_facts(daemon.config_path, daemon.pid_file, daemon.unit))
            push = plan_push(lb.name, daemon, facts, keepalived.render_config(config))
            plan += on_node(in_private_directory(lb.name, push, CONFIG_DIR), lb.name)
        # Nothing should print it; should keepalived -t ever quote the file, the error masks it.
        session.executor(secrets={VRRP_PASSWORD: password}).execute(plan, p)
