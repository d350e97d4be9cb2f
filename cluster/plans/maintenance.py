"""Rolling node maintenance (`fab maintain-nodes`), pure: which nodes, in what order, what is checked
before each, and the steps each goes through. The task (cluster/tasks/maintenance.py) walks the steps,
reading the facts each one needs when it comes to it, since every step changes what the next one sees.

Order: workers, then managers, then the lb node. Workers first because the swarm is built to lose one
(its tasks move, `plan_drain_node` refuses a drain that would strand a service): a command or a reboot
that breaks a node shows there, and the run stops before any manager, whose loss costs Raft margin, is
touched. The lb node last: it is the edge and the SSH jump host, so its reboot cuts both; nothing
else is in flight then. With two lbs (keepalived's VIP) each hands the VIP over to the other first, so
the edge keeps answering: only the requests in flight through the lb at the move are cut. One node at a time everywhere (no worker batches: one drained worker is what
`plan_drain_node` proves safe from the facts; a batch would need the same proof for the batch).
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cluster.errors import ConfigError, OptionErrors, SwarmlabError
from cluster.facts.daemons import BOOT_ID, DaemonFacts
from cluster.facts.network import interface_with, parse_interface
from cluster.facts.services import SWARM_STATE, SwarmState
from cluster.facts.swarm import LOCAL_NODE_STATE, NODES, SwarmNode
from cluster.inventory import Inventory, Node, Role
from cluster.operations import Plan, Run, Wait, Write
from cluster.plans.autolock import plan_unlock
from cluster.plans.nodes import MOVE_TIMEOUT, expected_after, placed_verdict
from cluster.waiting import Verdict
from rendering.daemon import DaemonSpec, stop_by_pid
from rendering.provision import daemon_json, engine_metrics_ip

COMMAND_TIMEOUT = 1800  # --command: an `apt-get -y upgrade` on a slow mirror
BACK_TIMEOUT = 600  # a rebooted VM: firmware, kernel, cloud-init, the engine, the swarm's heartbeat
BACK_INTERVAL = 3.0
DAEMON_JSON = "/etc/docker/daemon.json"
ROLE_ORDER = (Role.WORKER, Role.MANAGER, Role.LB)
ROLES_TEXT = ", ".join(r.value for r in ROLE_ORDER)


class MaintenanceRefused(SwarmlabError):
    """A node that may not be taken down now (quorum, a node not Ready, a manager not drained)."""


class MaintenanceStopped(SwarmlabError):
    """A node that did not come through its maintenance: the run stopped there."""


class Step(StrEnum):
    DRAIN = "drain"  # workers: their tasks move away (plans.nodes.plan_drain_node and its waits)
    HAND_OVER = "hand-over"  # an lb of a pair: keepalived stopped on it, the other lb holds the VIP
    ENGINE_CONFIG = "daemon.json"  # the rendered daemon.json written, applied by the reboot after it
    COMMAND = "command"  # --command, through the runner
    REBOOT = "reboot"  # the provider's reboot_node (the lab restarts the container)
    BACK = "back"  # SSH and the engine answer, the swarm lists it Ready with its role (managers reachable);
    # an lb: HAProxy answers (and keepalived runs again, as the other's backup, in a pair)
    ACTIVATE = "activate"  # workers: schedulable again (plans.nodes.plan_activate_node); managers stay drained
    CONVERGE = "converge"  # every service runs the replicas it can, healthy


@dataclass(frozen=True)
class Visit:
    """One node's maintenance: its steps, in order."""

    node: str
    role: Role
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Maintenance:
    visits: tuple[Visit, ...]
    command: str
    notes: tuple[str, ...] = ()


# --- the options, checked before anything is asked ---------------------------------------------------


@dataclass(frozen=True)
class Selection:
    nodes: tuple[str, ...] = ()  # named nodes; empty with no role: every swarm node
    role: Role | None = None


def parse_selection(nodes: str | None, role: str | None, command: str, reboot: bool) -> Selection:
    """--nodes a,b or --role R (not both), and something to do (--command and/or --reboot)."""
    problems = []
    if nodes is not None and role is not None:
        problems.append(ConfigError("--nodes", nodes, "is given with --role", "give one of --nodes and --role"))
    names: tuple[str, ...] = ()
    if nodes is not None:
        names = tuple(n.strip() for n in nodes.split(",") if n.strip())
        if not names:
            problems.append(
                ConfigError("--nodes", nodes, "names no node", "list nodes, e.g. --nodes worker-1,worker-2")
            )
        elif len(set(names)) != len(names):
            problems.append(ConfigError("--nodes", nodes, "names a node twice", "name each node once"))
    chosen: Role | None = None
    if role is not None:
        if role not in {r.value for r in ROLE_ORDER}:
            problems.append(ConfigError("--role", role, "is not a role maintain-nodes takes", f"one of {ROLES_TEXT}"))
        else:
            chosen = Role(role)
    if not command.strip() and not reboot:
        problems.append(
            ConfigError("--command", "", "nothing to do", "give --command CMD, --reboot, or both (the reboot last)")
        )
    if problems:
        raise OptionErrors(problems)
    return Selection(names, chosen)


def chosen_nodes(selection: Selection, inventory: Inventory) -> tuple[Node, ...]:
    """The inventory's nodes the selection names, in maintenance order (workers, managers, lb; inventory
    order within a role). No selection: every swarm node (the lb only when asked: its reboot is an
    outage of the edge, there being one lb node)."""
    maintained = [n for role in ROLE_ORDER for n in inventory.by_role(role)]
    if selection.role is not None:
        return tuple(n for n in maintained if n.role == selection.role)
    if not selection.nodes:
        return tuple(n for n in maintained if n.role != Role.LB)
    known = {n.name for n in maintained}
    unknown = [name for name in selection.nodes if name not in known]
    if unknown:
        others = sorted({n.name for n in inventory.nodes} - known)
        raise OptionErrors(
            [
                ConfigError(
                    "--nodes",
                    ",".join(selection.nodes),
                    f"{', '.join(unknown)}: not a node maintain-nodes takes"
                    + (f" ({', '.join(others)} is not: storage is left out)" if others else ""),
                    f"name nodes of the inventory: {', '.join(n.name for n in maintained)}",
                )
            ]
        )
    return tuple(n for n in maintained if n.name in selection.nodes)


# --- the plan of the whole run ---------------------------------------------------------------------------


def rendered_daemon_json(node: Node) -> str:
    """The daemon.json the templates give this node (as lab-up and cloud-init write it)."""
    return daemon_json(engine_metrics_ip(node.role, str(node.private_ip)))


def plan_maintenance(
    nodes: Sequence[Node],
    command: str,
    reboot: bool,
    stale_config: Mapping[str, bool],
    drained_workers: Collection[str] = (),
    *,
    lb_pair: bool = False,
) -> Maintenance:
    """Each node's steps. `stale_config`: the swarm nodes whose daemon.json differs from the rendered
    one; it is written, and the node rebooted to apply it even without --reboot (an engine restart
    that works alike on a VM and in a lab node, which has no systemd). Workers drained before the run
    (`drained_workers`) are left drained after it. `lb_pair`: the inventory has two lbs holding a VIP."""
    visits = []
    notes = [f"{name} was drained before: it stays drained" for name in sorted(drained_workers)]
    for node in nodes:
        stale = stale_config.get(node.name, False)
        restarts = reboot or stale
        steps: list[Step] = []
        if node.role == Role.WORKER:
            steps.append(Step.DRAIN)
        handed_over = node.role == Role.LB and lb_pair
        if handed_over:
            steps.append(Step.HAND_OVER)
        if stale:
            steps.append(Step.ENGINE_CONFIG)
            notes.append(
                f"{node.name}: its {DAEMON_JSON} differs from the rendered one: replaced, and applied by a reboot"
                + ("" if reboot else " (without --reboot too)")
            )
        if command.strip():
            steps.append(Step.COMMAND)
        if restarts:
            steps += [Step.REBOOT, Step.BACK]
        elif handed_over:
            steps.append(Step.BACK)  # keepalived started again, as the backup
        if node.role == Role.WORKER and node.name not in drained_workers:
            steps.append(Step.ACTIVATE)
        if node.role != Role.LB:
            steps.append(Step.CONVERGE)
        visits.append(Visit(node.name, node.role, tuple(steps)))
    if any(n.role == Role.LB for n in nodes) and lb_pair:
        notes.append(
            "each lb hands the VIP over to the other before it is touched: the site keeps answering, and only "
            "the requests in flight through it at the move are cut"
        )
    elif any(n.role == Role.LB for n in nodes) and reboot:
        notes.append("the lb node is the edge and the SSH jump host: the site does not answer while it reboots")
    return Maintenance(tuple(visits), command, tuple(notes))


def checks_of(visit: Visit) -> tuple[str, ...]:
    """What is checked before this node is taken down, in words (the dry run prints them)."""
    if visit.role == Role.LB and Step.HAND_OVER in visit.steps:
        return ("it answers over SSH", "the other lb's HAProxy answers and its keepalived runs: it can hold the VIP")
    if visit.role == Role.LB:
        return ("it answers over SSH",)
    found = [f"{visit.node} is Ready in the swarm as a {visit.role.value}"]
    if visit.role == Role.MANAGER:
        found += [
            f"{visit.node} is drained (managers run no task here)",
            "every other manager is Ready and reachable, so the rest keep a Raft majority while it is down",
        ]
    else:
        found.append("no service is left without a node (plan_drain_node)")
    return tuple(found)


def describe_maintenance(maintenance: Maintenance) -> str:
    """The order, the checks before each node and its steps: what a dry run prints."""
    lines = [f"order: {', '.join(v.node for v in maintenance.visits) or 'no node'}"]
    if maintenance.command:
        lines.append(f"command: {maintenance.command} (as root on each node, up to {COMMAND_TIMEOUT}s)")
    for number, visit in enumerate(maintenance.visits, 1):
        lines.append(f"{number}. {visit.node} ({visit.role.value}): {' -> '.join(s.value for s in visit.steps)}")
        lines += [f"     check: {check}" for check in checks_of(visit)]
    if maintenance.visits:
        lines.append("then: rebalance (services spread over the nodes again)")
    lines.append("the run stops at the first node that does not come back, leaving it drained")
    return "\n".join(lines)


# --- before a node goes down ----------------------------------------------------------------------------


def member(nodes: Sequence[SwarmNode], name: str) -> SwarmNode | None:
    found = sorted((n for n in nodes if n.hostname == name), key=lambda n: n.state != "ready")
    return found[0] if found else None


def refusal(visit: Visit, nodes: Sequence[SwarmNode]) -> str | None:
    """Why `visit.node` may not go down now, from the swarm's node list; None when it may."""
    if visit.role == Role.LB:
        return None
    found = member(nodes, visit.node)
    if found is None:
        return f"{visit.node} is not a member of the swarm. Fix: `fab bootstrap` joins it"
    if found.state != "ready":
        return f"{visit.node} is {found.state}, not Ready. Fix: bring it back first (`fab recover`, `fab status`)"
    if found.role != visit.role.value:
        return f"{visit.node} is a {found.role} in the swarm, a {visit.role.value} in the inventory. Fix: the inventory"
    if visit.role != Role.MANAGER:
        return None
    if found.availability != "drain":
        return (
            f"{visit.node} is {found.availability}, not drained: managers run no task here. "
            f"Fix: `fab drain-node --node {visit.node}` (or `fab bootstrap`: its drain-managers step)"
        )
    managers = [n for n in nodes if n.is_manager]
    others = [n for n in managers if n.hostname != visit.node]
    needed = len(managers) // 2 + 1
    if len(others) < needed:
        return (
            f"{visit.node} is one of {len(managers)} managers: without it {len(others)} are left and Raft needs "
            f"{needed}, so the swarm could not be changed nor checked while it is down. Fix: run 3 managers"
        )
    missing = [f"{n.hostname} ({n.state}, {n.manager_status or 'unknown'})" for n in others if not _healthy(n)]
    if missing:
        return (
            f"another manager is not Ready and reachable: {', '.join(missing)}; taking {visit.node} down too "
            "could cost the swarm its Raft majority. Fix: bring it back first (`fab status`, `fab recover`)"
        )
    return None


def _healthy(node: SwarmNode) -> bool:
    return node.state == "ready" and node.manager_status in ("leader", "reachable")


# --- a node's steps as plans ---------------------------------------------------------------------------------


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plan_engine_config(node: str, rendered: str) -> Plan:
    """The rendered daemon.json in place (the engine reads it at its next start: the reboot after it)."""
    return Plan(
        (
            Write(node, f"{DAEMON_JSON}.new", rendered.encode(), "upload the rendered daemon.json", mode=0o644),
            Run(node, f"mv {DAEMON_JSON}.new {DAEMON_JSON}", f"{DAEMON_JSON} replaced on {node}"),
        )
    )


def plan_command(node: str, command: str) -> Plan:
    hint = f"{node} is left drained: fix the command or the node, then `fab activate-node --node {node}`"
    return Plan((Run(node, command, f"`{command}` ran on {node}", timeout=COMMAND_TIMEOUT, hint=hint),))


def plan_engine_stop(node: str) -> Plan:
    """Stop the node's engine and wait (20 s at most) until it is gone, as a machine's shutdown stops
    docker.service first: a lab node's container stops with its engine killed otherwise. No engine, no-op."""
    stop = (
        'pid=$(cat /var/run/docker.pid 2>/dev/null) && kill "$pid" 2>/dev/null || exit 0; '
        'i=0; while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.2; i=$((i + 1)); done'
    )
    return Plan((Run(node, stop, f"the engine of {node} stopped"),))


def plan_ssh_reboot(node: str) -> Plan:
    """A reboot over SSH, detached so the command returns before the connection drops."""
    reboot = "nohup sh -c 'sleep 2; systemctl reboot || shutdown -r now' >/dev/null 2>&1 &"
    return Plan((Run(node, reboot, f"{node} rebooting"),))


def booted_verdict(before: str) -> Callable[[str], Verdict]:
    def verdict(output: str) -> Verdict:
        now = BOOT_ID.parse(output)
        if not now:
            return Verdict.waiting("it does not answer yet")
        return Verdict.ready("booted again") if now != before else Verdict.waiting("not rebooted yet")

    return verdict


def plan_rebooted(node: str, boot_id: str) -> Plan:
    return Plan(
        (Wait(node, BOOT_ID.command, booted_verdict(boot_id), f"{node} booted again", BACK_TIMEOUT, BACK_INTERVAL),)
    )


def _engine_in_swarm(output: str) -> Verdict:
    state = LOCAL_NODE_STATE.parse(output)
    if state == "locked":
        return Verdict.failure("its swarm is locked (autolock): run `docker swarm unlock` there with the key")
    if state == "active":
        return Verdict.ready("engine up, in the swarm")
    return Verdict.waiting(f"engine {'swarm ' + state if state else 'not answering yet'}")


def listed_verdict(name: str, role: str) -> Callable[[str], Verdict]:
    """The managers list `name` Ready with its role, and a manager as reachable."""

    def verdict(output: str) -> Verdict:
        found = member(NODES.parse(output), name)
        if found is None:
            return Verdict.waiting(f"{name} is not listed")
        if found.role != role:
            return Verdict.failure(f"{name} came back as a {found.role}, not a {role}")
        if found.state != "ready":
            return Verdict.waiting(f"{name} is {found.state}")
        if role == "manager" and found.manager_status not in ("leader", "reachable"):
            return Verdict.waiting(f"{name} is Ready but {found.manager_status or 'not'} reachable as a manager")
        return Verdict.ready(f"{name} Ready as a {role}")

    return verdict


def _every_state_known(output: str) -> Verdict:
    unknown = sorted(n.hostname for n in NODES.parse(output) if n.state == "unknown")
    if unknown:
        return Verdict.waiting(f"the leader does not know the state of {', '.join(unknown)} yet")
    return Verdict.ready("every node's state is known")


def _engine_up(output: str) -> Verdict:
    """As _engine_in_swarm, a locked swarm counted as up: the unlock after the wait handles it."""
    return (
        Verdict.ready("engine up, its swarm locked")
        if LOCAL_NODE_STATE.parse(output) == "locked"
        else _engine_in_swarm(output)
    )


def plan_back(visit: Visit, controller: str, unlock: bool = False) -> Plan:
    """Wait until a swarm node is back: its engine answers over SSH in the swarm, and a manager lists it.
    After a manager, also until the leader knows every node's state again: a manager's restart can move
    the leadership, and a new leader lists the other nodes Unknown until their agents report to it (seen
    in the lab for about a minute), which the next manager's quorum check would refuse. With `unlock`
    (a manager, the state directory holding unlock keys), a manager that comes back locked is unlocked."""
    settled = Wait(
        controller,
        NODES.command,
        _every_state_known,
        "the leader knows every node's state (a new leader lists nodes Unknown until they report)",
        BACK_TIMEOUT,
        BACK_INTERVAL,
    )
    return Plan(
        (
            Wait(
                visit.node,
                LOCAL_NODE_STATE.command,
                _engine_up if unlock else _engine_in_swarm,
                f"{visit.node} answers over SSH, its engine in the swarm",
                BACK_TIMEOUT,
                BACK_INTERVAL,
            ),
            *(plan_unlock([visit.node]).operations if unlock else ()),
            Wait(
                controller,
                NODES.command,
                listed_verdict(visit.node, visit.role.value),
                f"the swarm lists {visit.node} Ready as a {visit.role.value}",
                BACK_TIMEOUT,
                BACK_INTERVAL,
            ),
            *((settled,) if visit.role == Role.MANAGER else ()),
        )
    )


def _answers(output: str) -> Verdict:
    return Verdict.ready("it answers") if BOOT_ID.parse(output) else Verdict.waiting("it does not answer yet")


def plan_answers(node: str) -> Plan:
    """Wait until a node answers over SSH (the lb node, which runs no engine)."""
    return Plan((Wait(node, BOOT_ID.command, _answers, f"{node} answers over SSH", BACK_TIMEOUT, BACK_INTERVAL),))


def _serves(output: str) -> Verdict:
    return Verdict.ready() if output.strip() == "ready" else Verdict.waiting("it does not answer yet")


HAND_OVER_TIMEOUT = 30.0  # keepalived gives the VIP up at once on SIGTERM (priority 0); three adverts at most


def lb_ready(other: str, haproxy_serves: bool, keepalived: DaemonFacts) -> str | None:
    """Why the other lb of a pair cannot take the VIP now; None when it can."""
    problems = [
        what
        for what, ok in (("HAProxy does not answer", haproxy_serves), ("keepalived is not running", keepalived.running))
        if not ok
    ]
    if not problems:
        return None
    return (
        f"{other}, the other lb, cannot hold the VIP: {' and '.join(problems)} there. Fix: `fab haproxy` and "
        f"`fab keepalived` (or `fab bootstrap`), then `fab status` shows which lb holds the VIP"
    )


def _holds(vip: str, wanted: bool) -> Callable[[str], Verdict]:
    def verdict(output: str) -> Verdict:
        held = bool(parse_interface(output))
        if held == wanted:
            return Verdict.ready("it holds the VIP" if held else "it no longer holds the VIP")
        return Verdict.waiting(f"it {'does not hold' if wanted else 'still holds'} {vip}")

    return verdict


def plan_give_up_vip(node: str, daemon: DaemonSpec, facts: DaemonFacts) -> Plan:
    """keepalived stopped on `node`, which sends a priority-0 advert: the other lb takes the VIP at once.
    Detached, as a reboot is: the SSH session may itself run through the VIP, which leaves with it."""
    if not facts.running:
        return Plan()
    stop = f"systemctl stop {daemon.unit}" if facts.systemd else stop_by_pid(daemon.pid_file)
    detached = f"nohup sh -c {shlex.quote('sleep 1; ' + stop)} >/dev/null 2>&1 &"
    return Plan((Run(node, detached, f"{daemon.name} stopping on {node}: it gives the VIP up"),))


def plan_vip_moved(node: str, other: str, vip: str) -> Plan:
    """The other lb holds the VIP, and `node` does not."""
    held = interface_with(vip).command
    return Plan(
        (
            Wait(other, held, _holds(vip, True), f"{other} holds the VIP {vip}", HAND_OVER_TIMEOUT, 0.5),
            Wait(node, held, _holds(vip, False), f"{node} does not hold the VIP", HAND_OVER_TIMEOUT, 0.5),
        )
    )


def plan_lb_back(node: str, daemon: DaemonSpec, facts: DaemonFacts) -> Plan:
    """The lb node back: its HAProxy started if nothing started it (a lab node has no systemd), then serving."""
    operations: list[Run | Wait] = []
    if not facts.running:
        start = f"systemctl start {daemon.unit}" if facts.systemd else daemon.start
        operations.append(Run(node, start, f"{daemon.name} started on {node}"))
    if daemon.ready:
        probe = f"({daemon.ready}) >/dev/null 2>&1 && echo ready || echo no"
        operations.append(Wait(node, probe, _serves, f"{daemon.name} answers on {node}", BACK_TIMEOUT, 1))
    return Plan(tuple(operations))


def plan_converge(controller: str, state: SwarmState) -> Plan:
    expected = expected_after(state, state.nodes)
    what = "the swarm converged after this node, read afresh: every service runs its replicas, healthy"
    return Plan((Wait(controller, SWARM_STATE.command, placed_verdict(expected), what, MOVE_TIMEOUT, 3),))


def stopped(visit: Visit, step: Step, error: Exception, done: Sequence[str], untouched: Sequence[str]) -> str:
    """What the operator reads when a node did not come through: which, why, how it is left, the fix."""
    why = {
        Step.BACK: "it did not come back after its reboot",
        Step.REBOOT: "its reboot failed",
        Step.COMMAND: "the command failed there",
    }.get(step, f"its {step.value} step failed")
    left = {
        Role.WORKER: f"{visit.node} is left drained",
        Role.MANAGER: f"{visit.node} is left drained (as managers are)",
        Role.LB: f"{visit.node} is left as it is: the edge may not answer",
    }[visit.role]
    if Step.HAND_OVER in visit.steps:
        left = f"{visit.node} is left as it is, its keepalived perhaps stopped: the other lb holds the VIP"
    fix = f"see why on {visit.node} (its console; for a lab node `docker ps -a`), then `fab status`"
    if visit.role == Role.WORKER:
        fix += f"; once it is Ready, `fab activate-node --node {visit.node}`"
    if untouched:
        fix += f"; then `fab maintain-nodes --nodes {','.join(untouched)} ...` for the rest"
    return (
        f"maintain-nodes stopped at {visit.node}: {why}. {left}. "
        f"Done: {', '.join(done) or 'none'}. Not touched: {', '.join(untouched) or 'none'}.\n"
        f"{error}\nFix: {fix}"
    )
