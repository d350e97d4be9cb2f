"""Node availability, pure: drain a node for maintenance, activate it again.

Both wait until the services run what the swarm can place (health-gated): draining a worker moves its
tasks, and a service limited to one task per node runs fewer replicas while the node is out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from cluster.errors import SwarmlabError
from cluster.facts.services import SWARM_STATE, SwarmState
from cluster.facts.swarm import SwarmNode, parse_live_tasks, running_on
from cluster.operations import Plan, Run, Wait
from cluster.plans.services import capacity, last_error, running_tasks, wanted_count
from cluster.waiting import Verdict

MOVE_TIMEOUT = 300


class NodeError(SwarmlabError):
    """A node request that cannot be met: unknown node, or one that would leave a service nowhere to run."""


def find_node(nodes: Sequence[SwarmNode], name: str) -> SwarmNode:
    found = [n for n in nodes if n.hostname == name]
    if not found:
        raise NodeError(f"{name} is not a member of the swarm (members: {', '.join(n.hostname for n in nodes)})")
    # After a node re-joined, its old entry may linger Down: the live one is the one that matters.
    return sorted(found, key=lambda n: n.state != "ready")[0]


def empty_verdict(name: str) -> Callable[[str], Verdict]:
    def verdict(output: str) -> Verdict:
        running = parse_live_tasks(output)
        return Verdict.waiting(f"still on {name}: {', '.join(running)}") if running else Verdict.ready("none left")

    return verdict


def placed_verdict(expected: Mapping[str, int]) -> Callable[[str], Verdict]:
    """Every service runs at least the replicas expected of it (healthy)."""

    def verdict(output: str) -> Verdict:
        state = SWARM_STATE.parse(output)
        lagging = []
        for service in state.services:
            want = expected.get(service.name, 0)
            running = len(running_tasks(state, service))
            if running < want:
                seen = last_error(state, service)
                lagging.append(f"- {service.name}: {running}/{want}" + (f" ({seen})" if seen else ""))
        if lagging:
            return Verdict.waiting("\n".join(lagging))
        return Verdict.ready(f"{len(expected)} services run every replica they can")

    return verdict


def expected_after(state: SwarmState, nodes: Sequence[SwarmNode]) -> dict[str, int]:
    return {s.name: wanted_count(s, nodes) for s in state.services}


def _placed_wait(leader: str, expected: Mapping[str, int], what: str) -> Wait:
    return Wait(leader, SWARM_STATE.command, placed_verdict(expected), what, MOVE_TIMEOUT, 3)


def _with(nodes: Sequence[SwarmNode], node: SwarmNode, availability: str) -> tuple[SwarmNode, ...]:
    return tuple(replace(n, availability=availability) if n.node_id == node.node_id else n for n in nodes)


def plan_drain_node(leader: str, name: str, state: SwarmState) -> Plan:
    """Drain a node: its tasks move to the others; refused if a service would have nowhere to run."""
    node = find_node(state.nodes, name)
    if node.availability == "drain":
        return Plan(notes=(f"{name} is already drained",))
    after = _with(state.nodes, node, "drain")
    stranded = [
        s.name for s in state.services if s.replicas > 0 and capacity(s, after) == 0 and running_tasks(state, s)
    ]
    if stranded:
        raise NodeError(
            f"draining {name} would leave no node for {', '.join(sorted(stranded))}. "
            "Fix: activate another eligible node first"
        )
    notes = []
    for service in state.services:
        before, later = wanted_count(service, state.nodes), wanted_count(service, after)
        if later < before:
            if service.mode.startswith("global"):  # one task per eligible node; the spec wants no count
                notes.append(f"{service.name} (global) will run on {later} of {before} nodes while {name} is drained")
            else:
                notes.append(f"{service.name} will run {later} of {service.replicas} replicas while {name} is drained")
    expected = expected_after(state, after)
    drain = Run(leader, f"docker node update --availability drain {node.node_id}", f"{name} drained")
    placed = _placed_wait(leader, expected, "every service runs the replicas it can, healthy")
    if node.state != "ready":  # its tasks report nothing until it is back: the swarm places them elsewhere
        return Plan((drain, placed), (*notes, f"{name} is {node.state}: its tasks are not waited for"))
    # Until every task on the node has stopped, not only been told to: each finishes what it holds first.
    emptied = Wait(
        leader, running_on([node.node_id]).command, empty_verdict(name), f"no task runs on {name}", MOVE_TIMEOUT, 2
    )
    return Plan((drain, emptied, placed), tuple(notes))


def plan_activate_node(leader: str, name: str, state: SwarmState) -> Plan:
    """Make a drained (or paused) worker schedulable again; managers stay drained in this cluster."""
    node = find_node(state.nodes, name)
    if node.role == "manager":
        raise NodeError(
            f"{name} is a manager: managers stay drained here so that they run no task (bootstrap's "
            "drain-managers). Activate a worker instead"
        )
    if node.availability == "active":
        return Plan(notes=(f"{name} is already active",))
    if node.state != "ready":
        raise NodeError(
            f"{name} is {node.state}: bring its machine back first (it rejoins by itself), then activate it"
        )
    expected = expected_after(state, _with(state.nodes, node, "active"))
    return Plan(
        (
            Run(leader, f"docker node update --availability active {node.node_id}", f"{name} active"),
            _placed_wait(leader, expected, "every service runs its replicas, healthy"),
        ),
        (f"tasks that moved away do not come back by themselves: `fab rebalance` spreads them over {name} again",),
    )
