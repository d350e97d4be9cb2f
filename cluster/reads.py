"""Reads several tasks share, below the tasks: the leader to run manager commands on, the node list,
the day-2 swarm state, every manager's probe, the nodes' swarm certificates, and the workloads the
cluster serves. Each is a fact (cluster/facts/) read through the runner, with the choice or the error
handling around it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster.errors import CommandFailed, SwarmlabError, tail
from cluster.facts import read
from cluster.facts.certificates import NODE_CERTIFICATE, NodeCertificate
from cluster.facts.listings import STACK_NAMES
from cluster.facts.managers import ManagerProbe, Quorum, manager_probe
from cluster.facts.network import interface_with
from cluster.facts.services import SWARM_STATE, SwarmState
from cluster.facts.swarm import LOCAL_NODE_STATE, NODE_LIST, SWARM_INFO, SwarmNode
from cluster.inventory import Node
from cluster.runners import KEY_CHANGED, KEY_UNKNOWN, Runner
from cluster.session import Session
from cluster.workload import Workload, known_workloads, load_workload

PROBE_TIMEOUT = 60
NO_QUORUM_HINT = "a manager that cannot list services may have lost quorum: `fab status` tells, `fab recover` mends"


def find_leader(runner: Runner, avoid: str = "") -> Node:
    """A reachable manager with control available (manager commands run there), other than `avoid`
    (a manager about to go down).

    Managers are asked one by one, so a cluster that lost some managers can still be inspected.
    """
    problems = []
    for node in (m for m in runner.inventory.managers if m.name != avoid):
        try:
            info = read(runner, node, SWARM_INFO)
        except SwarmlabError as error:
            problems.append(f"{node.name}: {error}")
            continue
        if info.in_swarm and info.is_manager:
            return node
        problems.append(f"{node.name}: not a manager with control available (state {info.state})")
    raise SwarmlabError(
        "no reachable manager controls a swarm (run `fab bootstrap` for a new cluster):\n" + "\n".join(problems)
    )


def members(runner: Runner, leader: Node, *, missing_ok: bool = False) -> tuple[SwarmNode, ...]:
    """`docker node ls` on the leader; with missing_ok (a dry run before the swarm exists), none."""
    result = runner.run(leader, NODE_LIST.command, check=not missing_ok)
    return NODE_LIST.parse(result.stdout) if result.ok else ()


def swarm_state(runner: Runner, leader: Node) -> SwarmState:
    return read(runner, leader, SWARM_STATE, hint=NO_QUORUM_HINT)


def _why(error: SwarmlabError) -> str:
    if isinstance(error, CommandFailed):
        where = "unreachable over SSH" if error.exit_code is None else f"exit {error.exit_code}"
        return f"{where}: {' '.join(tail(error.output, 1).split())[:100]}"
    return " ".join(tail(str(error), 1).split())[:120]


def probe_manager(runner: Runner, node: Node) -> ManagerProbe:
    """One manager's swarm state, whether it sees a leader, and its Raft position; or why it is silent."""
    try:
        return read(runner, node, manager_probe(node.name), timeout=PROBE_TIMEOUT)
    except SwarmlabError as error:
        if isinstance(error, CommandFailed) and error.hint in (KEY_CHANGED, KEY_UNKNOWN):
            raise  # not a silent manager but maybe an impostor: stop, never plan around it
        return ManagerProbe(node.name, False, problem=_why(error))


def probe_managers(runner: Runner) -> Quorum:
    """Every manager of the inventory, asked on its own (one that does not answer is reported, not fatal)."""
    managers = runner.inventory.managers
    found = runner.each(managers, lambda node: probe_manager(runner, node), "asking the managers")
    return Quorum(tuple(found[m.name] for m in managers))


def node_certificate(runner: Runner, node: Node) -> NodeCertificate:
    """The node's swarm certificate (None in it when the node holds none), or why it could not be read."""
    try:
        return NodeCertificate(node.name, read(runner, node, NODE_CERTIFICATE, timeout=PROBE_TIMEOUT))
    except SwarmlabError as error:
        if isinstance(error, CommandFailed) and error.hint in (KEY_CHANGED, KEY_UNKNOWN):
            raise  # maybe an impostor: stop, as the manager probe does
        return NodeCertificate(node.name, problem=_why(error))
    except ValueError as error:  # not a certificate cryptography can read
        return NodeCertificate(node.name, problem=f"unreadable: {' '.join(str(error).split())[:100]}")


def node_certificates(runner: Runner, nodes: Sequence[Node]) -> tuple[NodeCertificate, ...]:
    """Every given node's swarm certificate, read at once; a node that does not answer is reported, not fatal."""
    found = runner.each(nodes, lambda node: node_certificate(runner, node), "reading the swarm certificates")
    return tuple(found[n.name] for n in nodes)


@dataclass(frozen=True)
class VipProbe:
    """Whether an lb of a pair holds the virtual IP (on which interface), or why it did not say."""

    name: str
    interface: str = ""  # "" when it does not hold the VIP (or did not answer)
    problem: str = ""  # why it did not answer

    @property
    def holds(self) -> bool:
        return bool(self.interface)


def vip_probes(runner: Runner) -> tuple[VipProbe, ...]:
    """Each lb asked, at once, whether it holds the inventory's virtual IP; none without a VIP (one lb)."""
    vip = runner.inventory.network.vip
    if vip is None:
        return ()

    def probe(node: Node) -> VipProbe:
        try:
            return VipProbe(node.name, read(runner, node, interface_with(str(vip)), timeout=PROBE_TIMEOUT))
        except SwarmlabError as error:
            if isinstance(error, CommandFailed) and error.hint in (KEY_CHANGED, KEY_UNKNOWN):
                raise  # maybe an impostor: stop, as the manager probe does
            return VipProbe(node.name, problem=_why(error))

    lbs = runner.inventory.lbs
    found = runner.each(lbs, probe, "asking the lbs which holds the virtual IP")
    return tuple(found[n.name] for n in lbs)


def served_workloads(session: Session, leader: Node | None, also: Workload | None = None) -> list[Workload]:
    """The configured stack, every known stack deployed on the swarm, and `also` (about to be deployed)."""
    names = {session.config.stack}
    if leader is not None:
        names |= set(read(session.runner, leader, STACK_NAMES, check=False)) & set(known_workloads())
    found = {name: load_workload(name, session.config.environment) for name in sorted(names)}
    if also is not None:
        found[also.name] = also
    return [found[name] for name in sorted(found)]


def locked_nodes(runner: Runner, nodes: Sequence[Node]) -> list[str]:
    """Those of `nodes` whose engine answers with its swarm locked (autolock), in their order; a node
    that does not answer is not among them (the tasks that need it say so themselves)."""

    def state(node: Node) -> str:
        try:
            return read(runner, node, LOCAL_NODE_STATE, timeout=PROBE_TIMEOUT)
        except SwarmlabError as error:
            if isinstance(error, CommandFailed) and error.hint in (KEY_CHANGED, KEY_UNKNOWN):
                raise  # maybe an impostor: never hand it a key
            return ""

    found = runner.each(nodes, state, "asking the managers whether they are locked")
    return [node.name for node in nodes if found[node.name] == "locked"]
