"""Day-2 operations on services, pure: scale, update, rollback and rebalance.

Facts (services, their tasks, the nodes) in, operations out. Every change runs detached and is
followed by a Wait on the service itself, so a task returns only once the swarm has done what was
asked with healthy tasks (Swarm counts a task with a healthcheck as running only once it is healthy),
or fails naming the task's error and its node.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from cluster.errors import SwarmlabError
from cluster.facts.services import Service, SwarmState, Task, service_status
from cluster.facts.swarm import SwarmNode
from cluster.operations import Plan, Run, Wait
from cluster.waiting import Verdict

SCALE_TIMEOUT = 300
# An update rolls one task at a time, each through its start period and the monitor window.
UPDATE_TIMEOUT = 900


class ServiceError(SwarmlabError):
    """A request about a service that cannot be met: unknown service, impossible replica count..."""


# --- which service, which nodes -------------------------------------------------------------------


def resolve_service(services: Sequence[Service], name: str, stack: str) -> Service:
    """A service by its full name (`stack_service`) or by its short name within `stack`."""
    by_name = {s.name: s for s in services}
    for candidate in (name, f"{stack}_{name}"):
        if candidate in by_name:
            return by_name[candidate]
    short = sorted(s.name.removeprefix(f"{stack}_") for s in services if s.stack == stack)
    others = sorted(s.name for s in services if s.stack != stack)
    known = ", ".join(short + others) or "none"
    raise ServiceError(f"no service {name!r} in stack {stack!r} nor by that full name. Services: {known}")


def short_name(service: Service) -> str:
    return service.name.removeprefix(f"{service.stack}_") if service.stack else service.name


def _constraint(expression: str) -> tuple[str, str, str] | None:
    for operator in ("==", "!="):
        if operator in expression:
            key, _, value = expression.partition(operator)
            return key.strip(), operator, value.strip()
    return None


def matches(constraint: str, node: SwarmNode) -> bool | None:
    """Whether a node meets a placement constraint; None when it is not one this reads (engine labels...)."""
    parsed = _constraint(constraint)
    if parsed is None:
        return None
    key, operator, value = parsed
    labels = dict(node.labels)
    actual: str | None
    if key == "node.role":
        actual = node.role
    elif key == "node.hostname":
        actual = node.hostname
    elif key == "node.id":
        actual = node.node_id
    elif key.startswith("node.labels."):
        actual = labels.get(key.removeprefix("node.labels."))
    else:
        return None
    return (actual == value) if operator == "==" else (actual != value)


def eligible_nodes(service: Service, nodes: Sequence[SwarmNode]) -> tuple[SwarmNode, ...]:
    """Nodes that may run the service's tasks: Ready, Active, and meeting every constraint this reads."""
    return tuple(n for n in nodes if n.schedulable and all(matches(c, n) is not False for c in service.constraints))


def capacity(service: Service, nodes: Sequence[SwarmNode]) -> int | None:
    """How many tasks the service can run at most on these nodes; None: no limit."""
    eligible = eligible_nodes(service, nodes)
    if service.mode.startswith("global"):
        return len(eligible)
    if not eligible:
        return 0
    return len(eligible) * service.max_per_node if service.max_per_node else None


def running_tasks(state: SwarmState, service: Service) -> tuple[Task, ...]:
    return tuple(t for t in state.tasks_of(service) if t.running)


def wanted_count(service: Service, nodes: Sequence[SwarmNode]) -> int:
    """The replicas the swarm can actually run: its replica count, or one per eligible node (global)."""
    limit = capacity(service, nodes)
    if service.mode.startswith("global"):
        return limit or 0
    return service.replicas if limit is None else min(service.replicas, limit)


def last_error(state: SwarmState, service: Service, image: str = "") -> str:
    """The newest task error of the service (of `image` first, when given), with its node."""
    failed = sorted((t for t in state.tasks_of(service) if t.error), key=lambda t: t.timestamp)
    preferred = [t for t in failed if image and same_image(t.image, image)] or failed
    if not preferred:
        return ""
    task = preferred[-1]
    return f"task {task.task_id[:12]} on {state.hostname(task.node_id)}: {task.state}: {task.error}"


def same_image(reference: str, wanted: str) -> bool:
    """`wanted` names the image `reference` runs: equal, or equal once the pinned digest is dropped."""
    if "@" in wanted:
        return reference == wanted
    return reference.split("@", 1)[0] == wanted


# --- waits ------------------------------------------------------------------------------------------


def _status(output: str, name: str) -> tuple[SwarmState, Service | None]:
    state = service_status(name).parse(output)
    return state, next((s for s in state.services if s.name == name), None)


def replicas_verdict(name: str, wanted: int) -> Callable[[str], Verdict]:
    """Exactly `wanted` tasks running (healthy), and no other task wanted."""

    def verdict(output: str) -> Verdict:
        state, service = _status(output, name)
        if service is None:
            return Verdict.failure(f"service {name} is gone")
        running = len(running_tasks(state, service))
        desired = sum(t.wanted for t in state.tasks_of(service))
        if running == wanted and desired == wanted:
            return Verdict.ready(f"{name}: {running}/{wanted} running")
        seen = last_error(state, service)
        return Verdict.waiting(f"{name}: {running}/{wanted} running" + (f"; last task error: {seen}" if seen else ""))

    return verdict


def update_verdict(name: str, before: str, image: str = "", rollback: bool = False) -> Callable[[str], Verdict]:
    """The update (or rollback) started after `before` completed with every replica running its image;
    an automatic rollback or a paused update is a failure, reported with the failing task and node."""
    done_state = "rollback_completed" if rollback else "completed"

    def verdict(output: str) -> Verdict:
        state, service = _status(output, name)
        if service is None:
            return Verdict.failure(f"service {name} is gone")
        if service.update_started == before:
            return Verdict.waiting(f"{name}: the {'rollback' if rollback else 'update'} has not started yet")
        if not rollback and service.update_state == "rollback_started":
            # Report once the rollback is over, so the service is whole again when the task returns.
            seen = last_error(state, service, image)
            return Verdict.waiting(
                f"{name}: the update failed, Swarm is rolling it back" + (f": {seen}" if seen else "")
            )
        failing = service.update_state in ("paused", "rollback_paused") or (
            not rollback and service.update_state == "rollback_completed"
        )
        if failing:
            seen = last_error(state, service, image)
            what = "rolled it back" if service.rolled_back else "paused it"
            return Verdict.failure(
                f"the update of {name} failed and Swarm {what} ({service.update_state}: {service.update_message})"
                + (f"\nfailing {seen}" if seen else "")
            )
        running = running_tasks(state, service)
        current = [t for t in running if same_image(t.image, service.image)]
        wanted = wanted_count(service, state.nodes) if state.nodes else service.replicas
        if service.update_state == done_state and len(current) >= wanted and len(running) == len(current):
            return Verdict.ready(f"{name}: {service.update_state}, {len(current)}/{wanted} running {service.image}")
        seen = last_error(state, service, image)
        return Verdict.waiting(
            f"{name}: {service.update_state or 'starting'}, {len(current)}/{wanted} on the new spec"
            + (f"; last task error: {seen}" if seen else "")
        )

    return verdict


def _wait_update(leader: str, service: Service, what: str, image: str = "", rollback: bool = False) -> Wait:
    return Wait(
        leader,
        service_status(service.name).command,
        update_verdict(service.name, service.update_started, image, rollback),
        what,
        UPDATE_TIMEOUT,
        3,
    )


# --- planners -----------------------------------------------------------------------------------------


def plan_scale(leader: str, service: Service, replicas: int, nodes: Sequence[SwarmNode], running: int) -> Plan:
    """Set the replica count, then wait until exactly that many tasks run, healthy.

    Refused, changing nothing, when placement makes the count impossible.
    """
    name = service.name
    if replicas < 0:
        raise ServiceError(f"{name}: replicas must be 0 or more, not {replicas}")
    if service.mode != "replicated":
        raise ServiceError(
            f"{name} is a {service.mode} service: the swarm runs one task per eligible node, so it cannot be scaled"
        )
    limit = capacity(service, nodes)
    if limit is not None and replicas > limit:
        eligible = ", ".join(n.hostname for n in eligible_nodes(service, nodes)) or "none"
        raise ServiceError(
            f"{name} cannot run {replicas} replicas: it allows {service.max_per_node} per node "
            f"(max_replicas_per_node) and {len(eligible_nodes(service, nodes))} nodes are eligible ({eligible}; "
            f"constraints: {', '.join(service.constraints) or 'none'}), so at most {limit}. "
            f"Fix: ask for {limit} or fewer, or add nodes that meet its constraints"
        )
    wait = Wait(
        leader,
        service_status(name).command,
        replicas_verdict(name, replicas),
        f"{name}: {replicas} replicas running",
        SCALE_TIMEOUT,
        2,
    )
    if service.replicas == replicas:
        if running == replicas:
            return Plan(notes=(f"{name} already runs {replicas} replicas",))
        return Plan((wait,), (f"{name} is set to {replicas} replicas; waiting for them",))
    command = f"docker service update --detach --replicas {replicas} {shlex.quote(name)}"
    return Plan((Run(leader, command, f"{name} scaled from {service.replicas} to {replicas}"), wait))


def plan_update(leader: str, service: Service, image: str, force: bool) -> Plan:
    """A rolling update to `image` (or of the same spec, with force), waited for to completion."""
    name = service.name
    if not image and not force:
        raise ServiceError(f"{name}: nothing to update: give --image REF, or --force to replace its tasks")
    if image and same_image(service.image, image) and not force:
        return Plan(notes=(f"{name} already runs {image}",))
    flags = (f" --image {shlex.quote(image)}" if image else "") + (" --force" if force else "")
    what = f"{name} updated" + (f" to {image}" if image else "") + (" (tasks replaced)" if force else "")
    return Plan(
        (
            Run(leader, f"docker service update --detach{flags} {shlex.quote(name)}", what),
            _wait_update(leader, service, f"rolling update of {name} ({service.update_order})", image),
        )
    )


def plan_rollback(leader: str, service: Service) -> Plan:
    """Back to the previous spec, unless the service was already rolled back: a second rollback would
    roll forward again, onto the spec that failed."""
    name = service.name
    if service.rolled_back:
        return Plan(
            notes=(
                f"{name} was already rolled back ({service.update_state}: {service.update_message}); "
                "rolling back again would return to the spec it rolled back from",
            )
        )
    if not service.has_previous:
        raise ServiceError(f"{name} has no previous spec to roll back to (it was never updated since it was created)")
    return Plan(
        (
            Run(leader, f"docker service rollback --detach {shlex.quote(name)}", f"{name} rolled back"),
            _wait_update(leader, service, f"rollback of {name}", rollback=True),
        )
    )


def spread(state: SwarmState, service: Service) -> dict[str, int]:
    """Running tasks per eligible node (hostname), zeros included."""
    eligible = {n.hostname for n in eligible_nodes(service, state.nodes)}
    counts = Counter(state.hostname(t.node_id) for t in running_tasks(state, service))
    return {host: counts.get(host, 0) for host in eligible} | {h: c for h, c in counts.items() if h not in eligible}


def uneven(counts: Mapping[str, int]) -> bool:
    """Tasks are unevenly spread when two nodes differ by more than one task."""
    return len(counts) > 1 and max(counts.values()) - min(counts.values()) > 1


def excess(counts: Mapping[str, int], replicas: int) -> int:
    """Tasks above an even share (the ceiling of replicas per node) on the nodes that hold too many."""
    share = -(-replicas // max(len(counts), 1))
    return sum(max(0, count - share) for count in counts.values())


def even_verdict(name: str, replicas: int) -> Callable[[str], Verdict]:
    def verdict(output: str) -> Verdict:
        state, service = _status(output, name)
        if service is None:
            return Verdict.failure(f"service {name} is gone")
        counts = spread(state, service)
        shown = ", ".join(f"{host}={count}" for host, count in sorted(counts.items()))
        if sum(counts.values()) != replicas:
            return Verdict.waiting(f"{name}: {sum(counts.values())}/{replicas} running ({shown})")
        if uneven(counts):
            return Verdict.failure(f"{name} is still unevenly spread ({shown})")
        return Verdict.ready(f"{name}: {shown}")

    return verdict


def _respread(leader: str, service: Service, extra: int) -> tuple[Run | Wait, ...]:
    """Scale by `extra` tasks and back, in the order the service's own updates use.

    Swarm places new tasks on the nodes with the fewest tasks of the service, and scaling down removes
    tasks from the nodes with the most, so the round trip evens the spread. (`service update --force`
    does not: measured on the lab, a start-first service replaced 2/1/0 by 2/0/1, because the old
    task still counts on its node while its replacement is placed.) start-first services go up first
    (never fewer healthy tasks than replicas); stop-first services go down first (never more).
    """
    name, replicas = service.name, service.replicas
    middle = replicas + extra if service.update_order == "start-first" else replicas - extra
    status = service_status(name).command

    def scale_to(count: int, why: str) -> Run:
        return Run(leader, f"docker service update --detach --replicas {count} {shlex.quote(name)}", why)

    return (
        scale_to(middle, f"{name} at {middle} replicas for a moment ({service.update_order})"),
        Wait(leader, status, replicas_verdict(name, middle), f"{name}: {middle} running", SCALE_TIMEOUT, 2),
        scale_to(replicas, f"{name} back to {replicas} replicas"),
        Wait(leader, status, even_verdict(name, replicas), f"{name}: evenly spread", SCALE_TIMEOUT, 2),
    )


def plan_rebalance(leader: str, state: SwarmState) -> Plan:
    """Even out, one service at a time, services whose tasks are unevenly spread over their eligible
    nodes (two nodes differ by more than one task). Nothing when every service is balanced."""
    operations: list[Run | Wait] = []
    notes: list[str] = []
    for service in sorted(state.services, key=lambda s: s.name):
        if service.mode != "replicated" or service.replicas < 2:
            continue
        counts = spread(state, service)
        if not uneven(counts):
            continue
        shown = ", ".join(f"{host}={count}" for host, count in sorted(counts.items()))
        if service.failed or sum(counts.values()) != service.replicas:
            notes.append(f"{service.name} is uneven ({shown}) but not settled ({service.update_state}): left alone")
            continue
        notes.append(f"{service.name} is unevenly spread: {shown}")
        operations.extend(_respread(leader, service, excess(counts, service.replicas)))
    if not operations and not notes:
        notes.append("every service's tasks are evenly spread over their eligible nodes")
    return Plan(tuple(operations), tuple(notes))


def parse_scale(spec: str) -> tuple[str, int]:
    """`SERVICE=N` (as `docker service scale` writes it) into the name and the count."""
    name, sep, count = spec.partition("=")
    if not sep or not name.strip():
        raise ServiceError(f"{spec!r}: write SERVICE=N, e.g. ui=6")
    try:
        replicas = int(count.strip())
    except ValueError:
        raise ServiceError(f"{spec!r}: the replica count must be a whole number, not {count!r}") from None
    if replicas < 0:
        raise ServiceError(f"{spec!r}: replicas must be 0 or more, not {replicas}")
    return name.strip(), replicas
