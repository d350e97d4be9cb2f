"""The isolation task: every Docker node's DOCKER-USER rules (rendering/isolation.py) in place, the script
that makes them there too; a second run changes nothing. Run by bootstrap, after nodes come back, and
as `fab isolation`."""

from __future__ import annotations

from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.firewall import isolation_state
from cluster.inventory import Inventory, Role
from cluster.operations import Plan
from cluster.plans.isolation import plan_isolation
from cluster.session import Session
from rendering.isolation import CHAIN, Rule, isolation_dropin, isolation_rules, isolation_script
from topology import ISOLATION_DROPIN, ISOLATION_SCRIPT


def data_hosts(inventory: Inventory) -> list[str]:
    """The data tier's addresses: the storage node, and the registry's and the export's hosts (the
    storage node's unless the inventory names others)."""
    hosts = [str(inventory.storage.private_ip)] if inventory.storage else []
    if inventory.registry:
        hosts.append(inventory.registry.rpartition(":")[0])
    if inventory.nfs:
        hosts.append(inventory.nfs.host)
    return hosts


def cluster_rules(inventory: Inventory) -> tuple[Rule, ...]:
    try:
        return isolation_rules(inventory.network.cidr, data_hosts(inventory), inventory.lb_addresses)
    except ValueError as error:
        raise SwarmlabError(f"inventory endpoints: {error}") from None


def isolate(session: Session) -> None:
    inventory, runner = session.inventory, session.runner
    engines = [n for n in inventory.nodes if n.role is not Role.LB]
    if inventory.storage is None or not engines:
        return
    rules = cluster_rules(inventory)
    script, dropin = isolation_script(rules), isolation_dropin()
    with session.phase(
        "isolation",
        f"containers reach neither the data tier, the nodes' SSH and Swarm ports nor the metadata service ({CHAIN})",
    ) as p:
        states = runner.each(
            engines,
            lambda n: read(runner, n, isolation_state(ISOLATION_SCRIPT, ISOLATION_DROPIN)),
            "reading the engines' DOCKER-USER rules",
        )
        plans: dict[str, Plan] = {
            n.name: plan_isolation(n.name, rules, script, dropin, states[n.name]) for n in engines
        }
        executor = session.executor()
        runner.each(
            engines,
            lambda n: executor.execute(plans[n.name], p),
            "putting the isolation rules in place",
        )
