"""maintain-nodes: node by node, drain, run a command and/or reboot, wait until the node is back,
activate it, wait until the services converge; rebalance at the end. What is done to which node in
what order, and what is checked before each, is planned in cluster/plans/maintenance.py; this walks
the steps, reading the facts each one needs when it comes to it."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.daemons import BOOT_ID, DaemonFacts, daemon_facts, file_sha
from cluster.facts.services import SwarmState
from cluster.inventory import Node, Role
from cluster.operations import Plan
from cluster.plans.maintenance import (
    DAEMON_JSON,
    Maintenance,
    MaintenanceRefused,
    MaintenanceStopped,
    Selection,
    Step,
    Visit,
    chosen_nodes,
    describe_maintenance,
    lb_ready,
    plan_answers,
    plan_back,
    plan_command,
    plan_converge,
    plan_engine_config,
    plan_give_up_vip,
    plan_lb_back,
    plan_maintenance,
    plan_vip_moved,
    refusal,
    rendered_daemon_json,
    sha256,
    stopped,
)
from cluster.plans.nodes import NodeError, plan_activate_node, plan_drain_node
from cluster.plans.services import plan_rebalance
from cluster.progress import PhaseResult
from cluster.reads import find_leader, swarm_state
from cluster.session import Session
from cluster.unlockkeys import stored_keys, unlock_secrets
from haproxy.model import DAEMON as HAPROXY
from keepalived.model import DAEMON as KEEPALIVED
from rendering.daemon import DaemonSpec


def maintain_nodes(session: Session, selection: Selection, command: str = "", reboot: bool = False) -> None:
    nodes = chosen_nodes(selection, session.inventory)  # unknown names stop here, before any node is asked
    runner = session.runner
    with session.phase("maintain-checks", "the order, and each node's checks as the swarm stands now") as p:
        leader = find_leader(runner)
        state = swarm_state(runner, leader)
        engines = [n for n in nodes if n.role != Role.LB]
        found = runner.each(engines, lambda n: read(runner, n, file_sha(DAEMON_JSON)), f"reading {DAEMON_JSON}")
        stale = {n.name: found[n.name] != sha256(rendered_daemon_json(n)) for n in engines}
        drained = [
            n.hostname for n in state.nodes if n.role == "worker" and n.availability == "drain" and n.state == "ready"
        ]
        plan = plan_maintenance(
            nodes,
            command,
            reboot,
            stale,
            [n.name for n in nodes if n.name in drained],
            lb_pair=session.inventory.lb_pair,
        )
        for note in plan.notes:
            p.note(note)
        for line in describe_maintenance(plan).splitlines():
            p.note(line)
        # Every node's check as the swarm stands now: a run that would be refused later is refused before
        # it changes anything. Each node is checked again just before it goes down.
        problems = [reason for visit in plan.visits if (reason := refusal(visit, state.nodes))]
        problems += _stranding(leader.name, plan, state)
        for visit in plan.visits:
            if visit.role == Role.LB:
                read(runner, session.inventory.node(visit.node), BOOT_ID)  # it answers over SSH
            if Step.HAND_OVER in visit.steps and (problem := _other_lb_problem(session, visit.node)):
                problems.append(problem)
        if problems:
            raise MaintenanceRefused("maintain-nodes changed nothing:\n" + "\n".join(f"- {r}" for r in problems))
        p.note("every check passes as the swarm stands now; each node's are checked again just before it goes down")
        if session.dry_run:
            p.planned(f"would maintain {len(plan.visits)} node(s) in this order, then rebalance", bool(plan.visits))
            return
    _walk(session, plan)
    with session.phase("rebalance", "spread the services over the nodes again") as p:
        leader = find_leader(runner)
        session.executor().execute(plan_rebalance(leader.name, swarm_state(runner, leader)), p)


def _other_lb(session: Session, node: str) -> Node:
    return next(lb for lb in session.inventory.lbs if lb.name != node)


def _other_lb_problem(session: Session, node: str) -> str | None:
    """Why the other lb of the pair could not take the VIP from `node` now; None when it could."""
    other = _other_lb(session, node)
    assert HAPROXY.ready is not None  # HAProxy's spec always says how to ask it
    serves = session.runner.run(other, f"{HAPROXY.ready} >/dev/null 2>&1", check=False).ok
    facts = read(session.runner, other, daemon_facts(KEEPALIVED.config_path, KEEPALIVED.pid_file, KEEPALIVED.unit))
    return lb_ready(other.name, serves, facts)


def _stranding(leader: str, plan: Maintenance, state: SwarmState) -> list[str]:
    """Each worker's drain checked as the swarm stands (each alone: they go one at a time)."""
    problems = []
    for visit in plan.visits:
        if Step.DRAIN in visit.steps:
            try:
                plan_drain_node(leader, visit.node, state)
            except NodeError as error:
                problems.append(str(error))
    return problems


def _walk(session: Session, plan: Maintenance) -> None:
    done: list[str] = []
    for number, visit in enumerate(plan.visits):
        untouched = [v.node for v in plan.visits[number + 1 :]]
        steps = " -> ".join(s.value for s in visit.steps)
        with session.phase(f"maintain-{visit.node}", f"{visit.role.value}: {steps}") as p:
            controller = find_leader(session.runner, avoid=visit.node)  # never the manager going down
            reason = refusal(visit, swarm_state(session.runner, controller).nodes)
            if reason:
                raise MaintenanceRefused(
                    f"maintain-nodes stopped before {visit.node}, which is untouched: {reason}. "
                    f"Done: {', '.join(done) or 'none'}. Not touched: {', '.join([visit.node, *untouched])}"
                )
            walk = _Walk(session, plan, visit, controller, p)
            for step in visit.steps:
                try:
                    walk.step(step)
                except SwarmlabError as error:
                    if not walk.touched:  # refused while planning its first change: nothing happened to it
                        raise MaintenanceRefused(
                            f"maintain-nodes stopped before {visit.node}, which is untouched: {error}. "
                            f"Done: {', '.join(done) or 'none'}. Not touched: {', '.join([visit.node, *untouched])}"
                        ) from None
                    raise MaintenanceStopped(stopped(visit, step, error, done, untouched)) from None
        done.append(visit.node)


@dataclass
class _Walk:
    """One node's steps, run in order; `touched` once one began changing it (a failure then leaves it part-way)."""

    session: Session
    plan: Maintenance
    visit: Visit
    controller: Node
    progress: PhaseResult
    touched: bool = False

    def _execute(self, plan: Plan) -> None:
        self.touched = self.touched or plan.changes
        self.session.executor().execute(plan, self.progress)

    def _daemon(self, node: Node, daemon: DaemonSpec) -> DaemonFacts:
        return read(self.session.runner, node, daemon_facts(daemon.config_path, daemon.pid_file, daemon.unit))

    def _state(self) -> SwarmState:
        return swarm_state(self.session.runner, self.controller)

    def step(self, step: Step) -> None:
        session, visit, controller = self.session, self.visit, self.controller.name
        node = session.inventory.node(visit.node)
        if step is Step.DRAIN:
            self._execute(plan_drain_node(controller, visit.node, self._state()))
        elif step is Step.HAND_OVER:
            problem = _other_lb_problem(session, visit.node)  # checked again: the run may have taken a while
            if problem:
                raise SwarmlabError(problem)
            vip, other = str(session.inventory.network.vip), _other_lb(session, visit.node)
            self._execute(plan_give_up_vip(visit.node, KEEPALIVED, self._daemon(node, KEEPALIVED)))
            session.runner.forget(node)  # through the VIP, the jump host's connection leaves with it
            self._execute(plan_vip_moved(visit.node, other.name, vip))
        elif step is Step.ENGINE_CONFIG:
            self._execute(plan_engine_config(visit.node, rendered_daemon_json(node)))
        elif step is Step.COMMAND:
            self._execute(plan_command(visit.node, self.plan.command))
        elif step is Step.REBOOT:
            self.touched = True
            session.provider.reboot_node(session.config, node, session.executor(), self.progress)
        elif step is Step.BACK and visit.role == Role.LB:
            self._execute(plan_answers(visit.node))
            self._execute(plan_lb_back(visit.node, HAPROXY, self._daemon(node, HAPROXY)))
            if Step.HAND_OVER in visit.steps:  # keepalived again, as the backup (nopreempt: the VIP stays)
                self._execute(plan_lb_back(visit.node, KEEPALIVED, self._daemon(node, KEEPALIVED)))
        elif step is Step.BACK and visit.role == Role.MANAGER and stored_keys(session.state):
            self.touched = True  # autolock: a rebooted manager comes back locked, unlocked here
            back = plan_back(visit, controller, unlock=True)
            session.executor(secrets=unlock_secrets(session.state, [visit.node])).execute(back, self.progress)
        elif step is Step.BACK:
            self._execute(plan_back(visit, controller))
        elif step is Step.ACTIVATE:
            self._execute(plan_activate_node(controller, visit.node, self._state()))
        else:
            self._execute(plan_converge(controller, self._state()))
