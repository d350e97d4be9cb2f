"""Services and their tasks: the day-2 planners' structured records (`docker service inspect`, tasks
by `docker inspect`), and a stack's replicas and update states in one round trip. One model per
concept: a Service and a Task, whichever command read them (cluster/facts/tasks.py lists tasks too)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from cluster.facts import Fact
from cluster.facts.swarm import NODES_COMMAND, SwarmNode, parse_nodes
from cluster.facts.text import SECTION, json_lines, sections


@dataclass(frozen=True)
class Service:
    """A swarm service. `docker service inspect` (SWARM_STATE, service_status) fills the spec's fields;
    `stack_services` gives the name, the CLI's replica column, the update state and the last error."""

    name: str
    service_id: str = ""
    mode: str = "replicated"  # replicated | global | replicated-job | global-job
    replicas: int = 0  # wanted by the spec; 0 for global services
    image: str = ""
    constraints: tuple[str, ...] = ()
    max_per_node: int = 0  # 0: no limit
    update_order: str = "stop-first"
    update_state: str = ""  # "", updating, completed, paused, rollback_started, rollback_paused, rollback_completed
    update_started: str = ""  # when the last update (or rollback) started: tells a new update from the last one
    update_message: str = ""
    has_previous: bool = False  # a previous spec to roll back to
    stack: str = ""  # com.docker.stack.namespace
    replica_status: str = ""  # the CLI's REPLICAS, running/wanted: "2/3", "1/1 (max 1 per node)"
    last_error: str = ""  # the newest task that is not running, with its node and error

    @property
    def rolled_back(self) -> bool:
        return self.update_state.startswith("rollback")

    @property
    def failed(self) -> bool:
        """The last update did not stick: Swarm paused it or rolled it back."""
        return self.update_state in ("paused", "rollback_started", "rollback_paused", "rollback_completed")

    @property
    def all_running(self) -> bool:
        running, _, rest = self.replica_status.partition("/")
        wanted = rest.split()[0] if rest else ""  # "1/1 (max 1 per node)" -> "1"
        return wanted != "" and running == wanted

    @property
    def converged(self) -> bool:
        # Replicas alone are not enough: during a rolling update the old tasks still count.
        return self.all_running and self.update_state in ("", "completed")

    @property
    def settled(self) -> bool:
        """Every replica runs and no update or rollback is under way: one asked for that ended counts
        (`fab rollback` ends in rollback_completed, which `converged` takes for a failed update)."""
        return self.all_running and self.update_state in ("", "completed", "rollback_completed")


@dataclass(frozen=True)
class Task:
    """A swarm task. `docker inspect --type task` (SWARM_STATE) fills the ids, slot and states; the CLI's
    listings (`service_tasks`, NODE_TASKS) give its name and node by name."""

    task_id: str = ""
    service_id: str = ""
    node_id: str = ""
    slot: int = 0  # 0 for a global service's task
    desired: str = ""  # running | shutdown | ...
    state: str = ""  # new | pending | assigned | ... | running | complete | failed | shutdown | rejected
    error: str = ""
    image: str = ""
    timestamp: str = ""  # RFC 3339 of the last state change: sorts newest last
    name: str = ""  # the CLI's "registration_api.2"; a global service's task: "registration_x.<node id>"
    node: str = ""  # the node's hostname, as the CLI names it
    current_state: str = ""  # the CLI's CURRENT STATE: "Running 5 minutes ago"

    @property
    def running(self) -> bool:
        return self.desired == "running" and self.state == "running"

    @property
    def wanted(self) -> bool:
        """The orchestrator wants this task to run (whatever state it is in now)."""
        return self.desired == "running"

    @property
    def slot_name(self) -> str:
        """How the CLI's task name ends: the slot, or a global service's node id."""
        return self.name.rpartition(".")[2]


@dataclass(frozen=True)
class SwarmState:
    """Services, their tasks and (when read) the nodes: what the day-2 planners decide from."""

    services: tuple[Service, ...]
    tasks: tuple[Task, ...]
    nodes: tuple[SwarmNode, ...] = ()

    def tasks_of(self, service: Service) -> tuple[Task, ...]:
        return tuple(t for t in self.tasks if t.service_id == service.service_id)

    def hostname(self, node_id: str) -> str:
        return next((n.hostname for n in self.nodes if n.node_id == node_id), node_id[:12] or "?")


# --- day 2: services, tasks and nodes as structured records ----------------------------------------

SERVICE_TEMPLATE = (
    '{"id":{{json .ID}},"name":{{json .Spec.Name}},"labels":{{json .Spec.Labels}},"mode":{{json .Spec.Mode}},'
    '"image":{{json .Spec.TaskTemplate.ContainerSpec.Image}},"placement":{{json .Spec.TaskTemplate.Placement}},'
    '"update_config":{{json .Spec.UpdateConfig}},"update_status":{{json .UpdateStatus}},'
    '"previous":{{if .PreviousSpec}}true{{else}}false{{end}}}'
)
TASK_TEMPLATE = (
    '{"id":{{json .ID}},"service":{{json .ServiceID}},"node":{{json .NodeID}},"slot":{{.Slot}},'
    '"desired":{{json .DesiredState}},"state":{{json .Status.State}},"error":{{json .Status.Err}},'
    '"image":{{json .Spec.ContainerSpec.Image}},"timestamp":{{json .Status.Timestamp}}}'
)


def services_command(name: str | None = None) -> str:
    """The services (all, or the one named), `---`, then every task of theirs (history included).

    Fails when the manager cannot list services (no quorum): an empty answer must mean "no services".
    """
    ids = "ids=$(docker service ls -q) || exit 1" if name is None else f"ids={shlex.quote(name)}"
    return (
        f"{ids}; "
        f"[ -z \"$ids\" ] || docker service inspect --format '{SERVICE_TEMPLATE}' $ids || exit 1; "
        f"echo {SECTION}; "
        f'[ -z "$ids" ] || docker service ps -q --no-trunc $ids | sort -u | '
        f"xargs -r docker inspect --type task --format '{TASK_TEMPLATE}'"
    )


def _service(row: dict[str, object]) -> Service:
    mode = row.get("mode") or {}
    assert isinstance(mode, dict)
    kind = next(iter(mode), "replicated").lower().replace("replicatedjob", "replicated-job")
    kind = kind.replace("globaljob", "global-job")
    replicated = mode.get("Replicated") or {}
    placement = row.get("placement") or {}
    update = row.get("update_config") or {}
    status = row.get("update_status") or {}
    labels = row.get("labels") or {}
    assert isinstance(placement, dict) and isinstance(update, dict) and isinstance(status, dict)
    assert isinstance(replicated, dict) and isinstance(labels, dict)
    return Service(
        service_id=str(row["id"]),
        name=str(row["name"]),
        mode=kind,
        replicas=int(replicated.get("Replicas", 0) or 0),
        image=str(row.get("image") or ""),
        constraints=tuple(str(c) for c in placement.get("Constraints") or ()),
        max_per_node=int(placement.get("MaxReplicas", 0) or 0),
        update_order=str(update.get("Order") or "stop-first"),
        update_state=str(status.get("State") or ""),
        update_started=str(status.get("StartedAt") or ""),
        update_message=str(status.get("Message") or ""),
        has_previous=bool(row.get("previous")),
        stack=str(labels.get("com.docker.stack.namespace") or ""),
    )


def _task(row: dict[str, object]) -> Task:
    return Task(
        task_id=str(row["id"]),
        service_id=str(row["service"]),
        node_id=str(row.get("node") or ""),
        slot=int(str(row.get("slot") or 0)),
        desired=str(row.get("desired") or ""),
        state=str(row.get("state") or ""),
        error=str(row.get("error") or ""),
        image=str(row.get("image") or ""),
        timestamp=str(row.get("timestamp") or ""),
    )


def parse_services_and_tasks(output: str) -> SwarmState:
    """`services_command` output (and the nodes section after it, when present)."""
    parts = [*sections(output), "", ""]
    return SwarmState(
        tuple(_service(r) for r in json_lines(parts[0])),
        tuple(_task(r) for r in json_lines(parts[1])),
        parse_nodes(parts[2]),
    )


def service_status(name: str) -> Fact[SwarmState]:
    """One service and its tasks, then `---` and the nodes (to name where a task failed)."""
    return Fact(f"{services_command(name)}; echo {SECTION}; {NODES_COMMAND}", parse_services_and_tasks)


# Every service and every task of theirs (no nodes).
SERVICES_AND_TASKS = Fact(services_command(), parse_services_and_tasks)
# Every service and task, then `---` and the nodes: the facts the day-2 planners decide from.
SWARM_STATE = Fact(f"{SERVICES_AND_TASKS.command}; echo {SECTION}; {NODES_COMMAND}", parse_services_and_tasks)


# --- a stack's services at a glance ---------------------------------------------------------------


def parse_stack_services(output: str) -> tuple[Service, ...]:
    """Parse `name|replicas` lines, `---`, `name|update state` lines, `---`, `task|node|state|error` lines.

    A task is named `<service>.<slot>` (`<service>.<node id>` in global mode), newest first per slot."""
    replicas_part, _, rest = output.partition("---")
    updates_part, _, tasks_part = rest.partition("---")
    updates = dict(line.strip().split("|", 1) for line in updates_part.splitlines() if "|" in line)
    errors: dict[str, str] = {}
    for line in tasks_part.splitlines():
        task, node, state, error = [*line.strip().split("|", 3), "", "", ""][:4]
        name = task.rpartition(".")[0] or task
        if name and name not in errors and (error or not state.startswith("Running")):
            errors[name] = f"node {node or '?'}: {state}{': ' + error if error else ''}"
    services = []
    for line in replicas_part.splitlines():
        if "|" in line:
            name, replicas = line.strip().split("|", 1)
            services.append(
                Service(
                    name,
                    replica_status=replicas.strip(),
                    update_state=updates.get(name, "").strip(),
                    last_error=errors.get(name, ""),
                )
            )
    return tuple(services)


def stack_services(stack: str) -> Fact[tuple[Service, ...]]:
    """Replicas, then update states, then every task that is not running, in one round trip.

    Four CLI calls whatever the stack's size (a `docker service ps` per service took 1.1 s for 13
    services, and the deploy's wait asks this every second)."""
    return Fact(
        f"docker stack services {stack} --format '{{{{.Name}}}}|{{{{.Replicas}}}}' 2>/dev/null && echo --- && "
        f'ids=$(docker stack services -q {stack}) && [ -n "$ids" ] && '
        "docker service inspect --format '{{.Spec.Name}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' $ids "
        "&& echo --- && docker service ps --no-trunc --format '{{.Name}}|{{.Node}}|{{.CurrentState}}|{{.Error}}' $ids",
        parse_stack_services,
    )


def stack_replicas(stack: str) -> Fact[tuple[Service, ...]]:
    """Each service of the stack with the CLI's replica column only (one call: a quick poll)."""
    return Fact(
        f"docker service ls --filter label=com.docker.stack.namespace={stack} --format '{{{{.Name}}}}|{{{{.Replicas}}}}'",
        parse_stack_services,
    )
