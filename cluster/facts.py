"""Facts: a command to run on a node and a pure parser of its output (the pyinfra way).

Parsers are unit-tested with recorded outputs; the commands run over SSH in the tasks.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

SWARM_INFO_COMMAND = "docker info --format '{{json .Swarm}}'"
NODE_LIST_COMMAND = "docker node ls --format '{{json .}}'"


@dataclass(frozen=True)
class SwarmInfo:
    """What one engine says about its swarm membership."""

    state: str  # inactive | pending | active | error | locked
    node_id: str
    node_addr: str
    cluster_id: str
    is_manager: bool
    managers: tuple[str, ...]  # addresses of the managers this node knows, "ip:2377"
    manager_ids: tuple[str, ...] = ()  # their node IDs, in the same order

    @property
    def in_swarm(self) -> bool:
        return self.state in ("active", "pending", "locked")


def parse_swarm_info(output: str) -> SwarmInfo:
    data = json.loads(output)
    cluster = data.get("Cluster") or {}
    return SwarmInfo(
        state=str(data.get("LocalNodeState", "inactive")),
        node_id=str(data.get("NodeID", "")),
        node_addr=str(data.get("NodeAddr", "")),
        cluster_id=str(cluster.get("ID", "")),
        is_manager=bool(data.get("ControlAvailable", False)),
        managers=tuple(str(m.get("Addr", "")) for m in (data.get("RemoteManagers") or [])),
        manager_ids=tuple(str(m.get("NodeID", "")) for m in (data.get("RemoteManagers") or [])),
    )


@dataclass(frozen=True)
class SwarmNode:
    """One row of `docker node ls`, as seen by a manager."""

    node_id: str
    hostname: str
    status: str  # Ready | Down | Unknown
    availability: str  # Active | Pause | Drain
    manager_status: str  # "" for workers, Leader | Reachable | Unreachable for managers

    @property
    def is_manager(self) -> bool:
        return self.manager_status != ""


def parse_node_list(output: str) -> tuple[SwarmNode, ...]:
    nodes = []
    for line in output.splitlines():
        if line.strip():
            row = json.loads(line)
            nodes.append(
                SwarmNode(
                    node_id=row["ID"],
                    hostname=row["Hostname"],
                    status=row["Status"],
                    availability=row["Availability"],
                    manager_status=row.get("ManagerStatus", ""),
                )
            )
    return tuple(nodes)


def running_tasks_command(node_ids: list[str]) -> str:
    return "docker node ps " + " ".join(node_ids) + " --filter desired-state=running --format '{{.Node}} {{.Name}}'"


def parse_running_tasks(output: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in output.splitlines() if line.strip())


def parse_lines(output: str) -> tuple[str, ...]:
    """Non-empty lines, stripped: `docker secret ls`, `docker stack ls`, names one a line."""
    return tuple(line.strip() for line in output.splitlines() if line.strip())


# --- a daemon driven by one configuration file -------------------------------------------------


def daemon_facts_command(config_path: str, pid_file: str, unit: str = "") -> str:
    """Under systemd a daemon runs when its unit is active: Debian's docker-registry unit writes no pid
    file, so the pid file alone said "not running" and every run restarted it (found by the rehearsal)."""
    pid_alive = f'test -s {pid_file} && kill -0 "$(head -n1 {pid_file})"'
    alive = (
        f"if test -d /run/systemd/system; then systemctl is-active --quiet {unit}; else {pid_alive}; fi"
        if unit
        else pid_alive
    )
    return (
        f"printf 'config_sha=%s\\n' \"$(sha256sum {config_path} 2>/dev/null | cut -d' ' -f1)\"; "
        "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\"; "
        f"printf 'running=%s\\n' \"$( ({alive}) 2>/dev/null && echo yes || echo no)\""
    )


@dataclass(frozen=True)
class DaemonFacts:
    config_sha: str
    systemd: bool
    running: bool


def parse_daemon_facts(output: str) -> DaemonFacts:
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return DaemonFacts(values.get("config_sha", ""), values.get("systemd") == "yes", values.get("running") == "yes")


def file_sha_command(path: str) -> str:
    """The sha256 of a file on a node, or nothing when it does not exist."""
    return f"sha256sum {path} 2>/dev/null | cut -d' ' -f1; true"


def parse_file_sha(output: str) -> str:
    word = output.strip().split()[0] if output.strip() else ""
    return word if len(word) == 64 and all(c in "0123456789abcdef" for c in word) else ""


# --- services of a stack -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    name: str
    replicas: str  # "2/3", "1/1 (max 1 per node)"
    update: str = ""  # UpdateStatus.State: "", updating, completed, rollback_started, rollback_completed, paused...
    last_error: str = ""  # the newest task that is not running, with its node and error

    @property
    def failed(self) -> bool:
        """The last update did not stick: Swarm paused it or rolled it back."""
        return self.update in ("paused", "rollback_started", "rollback_paused", "rollback_completed")

    @property
    def all_running(self) -> bool:
        running, _, rest = self.replicas.partition("/")
        wanted = rest.split()[0] if rest else ""  # "1/1 (max 1 per node)" -> "1"
        return wanted != "" and running == wanted

    @property
    def converged(self) -> bool:
        # Replicas alone are not enough: during a rolling update the old tasks still count.
        return self.all_running and self.update in ("", "completed")

    @property
    def settled(self) -> bool:
        """Every replica runs and no update or rollback is under way: one asked for that ended counts
        (`fab rollback` ends in rollback_completed, which `converged` takes for a failed update)."""
        return self.all_running and self.update in ("", "completed", "rollback_completed")


def stack_services_command(stack: str) -> str:
    """Replicas, then update states, then every task that is not running, in one round trip.

    Three CLI calls whatever the stack's size (a `docker service ps` per service took 1.1 s for 13
    services, and the deploy's wait asks this every 2 s)."""
    return (
        f"docker stack services {stack} --format '{{{{.Name}}}}|{{{{.Replicas}}}}' 2>/dev/null && echo --- && "
        f'ids=$(docker stack services -q {stack}) && [ -n "$ids" ] && '
        "docker service inspect --format '{{.Spec.Name}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' $ids "
        "&& echo --- && docker service ps --no-trunc --format '{{.Name}}|{{.Node}}|{{.CurrentState}}|{{.Error}}' $ids"
    )


def parse_services(output: str) -> tuple[ServiceState, ...]:
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
    states = []
    for line in replicas_part.splitlines():
        if "|" in line:
            name, replicas = line.strip().split("|", 1)
            states.append(ServiceState(name, replicas.strip(), updates.get(name, "").strip(), errors.get(name, "")))
    return tuple(states)


# --- storage -------------------------------------------------------------------------------------

NFS_CLIENT_COMMAND = "grep -qw nfs4 /proc/filesystems || modprobe -q nfs4"
EXPORT_ID_FILE = ".swarmlab-export-id"


def export_id_command(export_dir: str) -> str:
    """The export's id (made once by the nfs task); a worker that reads the same id sees the export itself."""
    return f"cat {export_dir}/{EXPORT_ID_FILE} 2>/dev/null; true"


def owners_command(directories: list[str]) -> str:
    """`path uid` for each directory that exists; absent ones print nothing."""
    return "stat -c '%n %u' " + " ".join(directories) + " 2>/dev/null; true"


def parse_owners(output: str) -> dict[str, int]:
    found = {}
    for line in output.splitlines():
        path, _, uid = line.strip().rpartition(" ")
        if path and uid.isdigit():
            found[path] = int(uid)
    return found


# --- observability: service logs, swarm events, tasks per node -----------------------------------

SERVICE_NAMES_COMMAND = "docker service ls --format '{{.Name}}'"
# Every node's running tasks, one node at a time: `docker node ps A B C` repeats tasks across nodes.
NODE_TASKS_COMMAND = (
    "for n in $(docker node ls -q); do docker node ps $n --filter desired-state=running "
    "--format '{{.Node}}|{{.Name}}|{{.CurrentState}}|{{.Image}}'; done"
)
# A plain read goes task by task, each bounded by `timeout`: a whole service's log stream can stop
# without ending (moby/moby#38640, swarmkit#1956; seen here right after a rolling update), and then
# only that task's lines are missing, said so by a marker line. `timeout` also ends a --follow (exit
# status 124: "followed for the whole window"); a follow stays one service-wide stream so that it sees
# the tasks a rolling update starts.
TIMED_OUT = 124
TASK_READ_LIMIT = 20
READ_FAILED = "#swarmlab-logs-failed"


def service_tasks_command(service: str) -> str:
    """Every task Swarm keeps for the service (running ones and the recent history of each slot)."""
    return f"docker service ps --no-trunc --format '{{{{.ID}}}}|{{{{.Name}}}}|{{{{.Node}}}}' {shlex.quote(service)}"


@dataclass(frozen=True)
class TaskRef:
    task_id: str
    name: str  # "registration_api.2"; a global service's task: "registration_x.<node id>"
    node: str

    @property
    def slot(self) -> str:
        return self.name.rpartition(".")[2]


def parse_service_tasks(output: str) -> tuple[TaskRef, ...]:
    found = []
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0]:
            found.append(TaskRef(*parts))
    return tuple(found)


def task_logs_command(task_ids: Sequence[str], tail: int | None, since_seconds: int | None) -> str:
    """Each task's logs in turn (`tail` None: all of them), a marker line for a task whose read failed."""
    options = f"--timestamps --no-trunc --tail {'all' if tail is None else tail}"
    if since_seconds is not None:
        options += f" --since {since_seconds}s"
    return (
        f"for t in {' '.join(shlex.quote(t) for t in task_ids)}; do "
        f"timeout {TASK_READ_LIMIT} docker service logs {options} $t 2>&1; "
        f'status=$?; [ $status -eq 0 ] || echo "{READ_FAILED} $t $status"; done'
    )


def parse_read_failures(output: str) -> dict[str, int]:
    """The tasks whose read failed, with the exit status (124: cut by `timeout`)."""
    failed = {}
    for line in output.splitlines():
        if line.startswith(READ_FAILED + " "):
            _, task, status = line.split()
            failed[task] = int(status)
    return failed


def service_follow_command(service: str, tail: int, since_seconds: int | None, follow_seconds: int) -> str:
    options = f"--timestamps --no-trunc --tail {tail}"
    if since_seconds is not None:
        options += f" --since {since_seconds}s"
    return (
        f"timeout {follow_seconds} docker service logs --follow {options} {shlex.quote(service)} 2>&1; "
        f"status=$?; [ $status -eq {TIMED_OUT} ] && exit 0; exit $status"
    )


@dataclass(frozen=True)
class LogLine:
    """One line of `docker service logs --timestamps --no-trunc`; a line Docker did not frame (an error
    of the log stream itself) keeps only its text."""

    time: str  # RFC 3339 with nanoseconds, as Docker prints it; "" when unframed
    service: str
    slot: str  # the replica's slot, or the node id of a global service's task
    task_id: str
    node: str
    message: str

    @property
    def framed(self) -> bool:
        return bool(self.time)


# "2026-11-25T16:12:53.340314088Z registration_api.1.ax6x...@worker-2    | message"
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+) ([^\s|]+@[^\s|]+)\s*\| ?(.*)$")


def parse_log_line(line: str) -> LogLine:
    found = _LOG_LINE.match(line.rstrip("\r\n"))
    if not found:
        return LogLine("", "", "", "", "", line.rstrip("\r\n"))
    time, context, message = found.groups()
    task, _, node = context.rpartition("@")
    parts = task.rsplit(".", 2)  # service names may hold dots; slot and task id never do
    service, slot, task_id = parts if len(parts) == 3 else (task, "", "")
    return LogLine(time, service, slot, task_id, node, message)


def parse_service_logs(output: str) -> tuple[LogLine, ...]:
    return tuple(parse_log_line(line) for line in output.splitlines() if line.strip())


def events_command(since_seconds: int, types: Sequence[str]) -> str:
    """The swarm's events (only managers keep them) from `since` ago until now: a bounded read, never a stream."""
    filters = "".join(f" --filter type={t}" for t in types)
    return f"docker events --since {since_seconds}s --until 0s --filter scope=swarm{filters} --format '{{{{json .}}}}'"


@dataclass(frozen=True)
class SwarmEvent:
    time_ns: int
    type: str  # service | node | secret | config | network
    action: str  # create | update | remove
    name: str
    attributes: tuple[tuple[str, str], ...]  # the others (state.old/new, availability.old/new...), sorted


def parse_events(output: str) -> tuple[SwarmEvent, ...]:
    events = []
    for line in output.splitlines():
        if not line.strip().startswith("{"):
            continue
        row = json.loads(line)
        actor = row.get("Actor") or {}
        attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
        name = attributes.pop("name", "") or str(actor.get("ID", ""))[:12]
        time_ns = int(row.get("timeNano") or int(row.get("time", 0)) * 1_000_000_000)
        events.append(
            SwarmEvent(
                time_ns, str(row.get("Type", "")), str(row.get("Action", "")), name, tuple(sorted(attributes.items()))
            )
        )
    return tuple(events)


@dataclass(frozen=True)
class NodeTask:
    node: str
    name: str  # "registration_api.1"
    state: str  # "Running 5 minutes ago"
    image: str


def parse_node_tasks(output: str) -> tuple[NodeTask, ...]:
    seen: dict[tuple[str, str], NodeTask] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0]:
            seen.setdefault((parts[0], parts[1]), NodeTask(*parts))
    return tuple(seen.values())


# --- a stack's Prometheus ------------------------------------------------------------------------


def prometheus_query_command(addresses: Sequence[str], port: int, prefix: str, query: str) -> str:
    """One instant query (`/api/v1/query`), asked of each worker in turn until one answers: Prometheus
    publishes its port in host mode on the worker it runs on."""
    url = f'"http://$ip:{port}{prefix}/api/v1/query"'
    data = shlex.quote(f"query={query}")
    return f"for ip in {' '.join(addresses)}; do curl -sf -m 3 -G {url} --data-urlencode {data} && exit 0; done; exit 1"


def parse_prometheus_vector(output: str, *labels: str) -> dict[tuple[str, ...], float]:
    """An instant vector's samples, keyed by the values of `labels` (absent labels are "")."""
    data = json.loads(output)
    if data.get("status") != "success":
        raise ValueError(f"Prometheus answered {data.get('status')}: {data.get('error', '')}")
    found: dict[tuple[str, ...], float] = {}
    for sample in (data.get("data") or {}).get("result") or []:
        metric = sample.get("metric") or {}
        found[tuple(str(metric.get(label, "")) for label in labels)] = float(sample["value"][1])
    return found


# --- the cluster map's container on a manager ----------------------------------------------------

MAP_CONTAINER = "swarmlab-map"
MAP_FACTS_COMMAND = (
    f"docker inspect --format '{{{{.Config.Image}}}}|{{{{.State.Running}}}}' {MAP_CONTAINER} 2>/dev/null; true"
)


@dataclass(frozen=True)
class MapFacts:
    image: str  # "" when there is no such container
    running: bool


def parse_map_facts(output: str) -> MapFacts:
    image, _, running = output.strip().partition("|")
    return MapFacts(image, running == "true")


# --- day 2: the swarm's nodes, services and tasks, as structured records --------------------------
# Compact JSON templates: one object a line, only the fields the planners read (full `{{json .}}`
# carries certificates and whole specs, ten times the bytes over SSH for nothing).

NODE_TEMPLATE = (
    '{"id":{{json .ID}},"hostname":{{json .Description.Hostname}},"role":{{json .Spec.Role}},'
    '"availability":{{json .Spec.Availability}},"labels":{{json .Spec.Labels}},"state":{{json .Status.State}},'
    '"addr":{{json .Status.Addr}},"leader":{{if .ManagerStatus}}{{.ManagerStatus.Leader}}{{else}}false{{end}},'
    '"reachability":{{if .ManagerStatus}}{{json .ManagerStatus.Reachability}}{{else}}""{{end}},'
    '"manager_addr":{{if .ManagerStatus}}{{json .ManagerStatus.Addr}}{{else}}""{{end}}}'
)
# Fails without quorum (no leader to list nodes), rather than answering "no nodes".
NODES_COMMAND = f"ids=$(docker node ls -q) && docker node inspect --format '{NODE_TEMPLATE}' $ids"

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
SECTION = "---"


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


def service_status_command(name: str) -> str:
    """One service and its tasks, then `---` and the nodes (to name where a task failed)."""
    return f"{services_command(name)}; echo {SECTION}; {NODES_COMMAND}"


def swarm_state_command() -> str:
    """Every service and task, then `---` and the nodes: the facts the day-2 planners decide from."""
    return f"{services_command()}; echo {SECTION}; {NODES_COMMAND}"


@dataclass(frozen=True)
class NodeFacts:
    """A swarm node as a manager sees it."""

    node_id: str
    hostname: str
    role: str  # manager | worker
    availability: str  # active | pause | drain
    state: str  # ready | down | unknown | disconnected
    addr: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    leader: bool = False
    reachability: str = ""  # reachable | unreachable | "" (workers)
    manager_addr: str = ""  # ip:2377 for managers

    @property
    def schedulable(self) -> bool:
        return self.state == "ready" and self.availability == "active"


@dataclass(frozen=True)
class ServiceFacts:
    service_id: str
    name: str
    mode: str  # replicated | global | replicated-job | global-job
    replicas: int  # 0 for global services
    image: str
    constraints: tuple[str, ...] = ()
    max_per_node: int = 0  # 0: no limit
    update_order: str = "stop-first"
    update_state: str = ""  # "", updating, completed, paused, rollback_started, rollback_paused, rollback_completed
    update_started: str = ""  # when the last update (or rollback) started: tells a new update from the last one
    update_message: str = ""
    has_previous: bool = False  # a previous spec to roll back to
    stack: str = ""  # com.docker.stack.namespace

    @property
    def rolled_back(self) -> bool:
        return self.update_state.startswith("rollback")

    @property
    def failed(self) -> bool:
        return self.update_state in ("paused", "rollback_started", "rollback_paused", "rollback_completed")


@dataclass(frozen=True)
class TaskFacts:
    task_id: str
    service_id: str
    node_id: str
    slot: int
    desired: str  # running | shutdown | ...
    state: str  # new | pending | assigned | ... | running | complete | failed | shutdown | rejected
    error: str = ""
    image: str = ""
    timestamp: str = ""  # RFC 3339 of the last state change: sorts newest last

    @property
    def running(self) -> bool:
        return self.desired == "running" and self.state == "running"

    @property
    def wanted(self) -> bool:
        """The orchestrator wants this task to run (whatever state it is in now)."""
        return self.desired == "running"


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def parse_nodes(output: str) -> tuple[NodeFacts, ...]:
    nodes = []
    for row in _json_lines(output):
        labels = row.get("labels") or {}
        assert isinstance(labels, dict)
        nodes.append(
            NodeFacts(
                node_id=str(row["id"]),
                hostname=str(row["hostname"]),
                role=str(row["role"]),
                availability=str(row["availability"]),
                state=str(row["state"]),
                addr=str(row.get("addr") or ""),
                labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
                leader=bool(row.get("leader")),
                reachability=str(row.get("reachability") or ""),
                manager_addr=str(row.get("manager_addr") or ""),
            )
        )
    return tuple(nodes)


def _service(row: dict[str, object]) -> ServiceFacts:
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
    return ServiceFacts(
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


def _task(row: dict[str, object]) -> TaskFacts:
    return TaskFacts(
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


@dataclass(frozen=True)
class SwarmState:
    """Services, their tasks and (when read) the nodes: what the day-2 planners decide from."""

    services: tuple[ServiceFacts, ...]
    tasks: tuple[TaskFacts, ...]
    nodes: tuple[NodeFacts, ...] = ()

    def tasks_of(self, service: ServiceFacts) -> tuple[TaskFacts, ...]:
        return tuple(t for t in self.tasks if t.service_id == service.service_id)

    def hostname(self, node_id: str) -> str:
        return next((n.hostname for n in self.nodes if n.node_id == node_id), node_id[:12] or "?")


def sections(output: str) -> list[str]:
    """The parts of an output separated by `---` lines."""
    parts: list[list[str]] = [[]]
    for line in output.splitlines():
        if line.strip() == SECTION:
            parts.append([])
        else:
            parts[-1].append(line)
    return ["\n".join(part) for part in parts]


def parse_services_and_tasks(output: str) -> SwarmState:
    """`services_command` output (and `service_status_command`'s nodes section, when present)."""
    parts = [*sections(output), "", ""]
    return SwarmState(
        tuple(_service(r) for r in _json_lines(parts[0])),
        tuple(_task(r) for r in _json_lines(parts[1])),
        parse_nodes(parts[2]),
    )


# --- the swarm's certificate authority -----------------------------------------------------------

CA_COMMAND = (
    "docker info --format '{{json .Swarm.Cluster.TLSInfo.CertIssuerPublicKey}}|{{.Swarm.Cluster.RootRotationInProgress}}'"
    " && docker node ls --format '{{.Hostname}}|{{.Status}}|{{.TLSStatus}}'"
)


@dataclass(frozen=True)
class CaFacts:
    issuer_key: str  # the root CA's public key (base64): changes when a rotation completes
    rotating: bool
    nodes: tuple[tuple[str, str, str], ...]  # (hostname, status, TLS status)


def parse_ca(output: str) -> CaFacts:
    first, *rest = [line.strip() for line in output.splitlines() if line.strip()] or [""]
    key, _, rotating = first.partition("|")
    nodes = tuple(tuple([*line.split("|"), "", ""][:3]) for line in rest)
    return CaFacts(key.strip('"'), rotating == "true", nodes)  # type: ignore[arg-type]


# --- managers and quorum ---------------------------------------------------------------------------

RAFT_DIR = "/var/lib/docker/swarm/raft"
# One round trip per manager: its swarm state, whether it sees a leader (`node ls` needs one), and
# where its Raft log stands. The log is encrypted, so its position is read from file names (snapshot
# term-index, WAL seq-index, in hex) and the newest WAL's last write time.
MANAGER_PROBE_COMMAND = (
    "docker info --format '{{json .Swarm}}' || exit 1; echo ---; "
    "timeout 20 docker node ls -q >/dev/null 2>&1 && echo leader=yes || echo leader=no; echo ---; "
    f"cd {RAFT_DIR} 2>/dev/null && "
    "snap=$(ls snap-v3-encrypted 2>/dev/null | grep '[.]snap$' | sort | tail -n1) && "
    "wal=$(ls wal-v3-encrypted 2>/dev/null | grep '[.]wal$' | sort | tail -n1) && "
    'printf \'snap=%s\\nwal=%s\\nwal_mtime=%s\\n\' "$snap" "$wal" "$(stat -c %.9Y wal-v3-encrypted/$wal 2>/dev/null)"; true'
)


@dataclass(frozen=True)
class RaftPosition:
    snapshot: str = ""  # newest snapshot file, "<term>-<index>.snap"
    wal: str = ""  # newest WAL file, "<seq>-<first index>.wal"
    wal_mtime: float = 0.0

    @property
    def rank(self) -> tuple[int, int, float]:
        """Later is more up to date: the snapshot's index, then the newest WAL's first index, then when
        it was last written (the log itself is encrypted; clocks are assumed in sync, as NTP keeps them)."""

        def index(name: str) -> int:
            digits = name.partition(".")[0].rpartition("-")[2]
            return int(digits, 16) if digits else -1

        return index(self.snapshot), index(self.wal), self.wal_mtime


@dataclass(frozen=True)
class ManagerProbe:
    """What one manager (of the inventory) says, or why it says nothing."""

    name: str
    answers: bool
    problem: str = ""  # why it does not answer
    info: SwarmInfo | None = None
    sees_leader: bool = False
    raft: RaftPosition = RaftPosition()

    @property
    def is_manager(self) -> bool:
        return self.info is not None and self.info.in_swarm and self.info.is_manager


def parse_manager_probe(name: str, output: str) -> ManagerProbe:
    parts = [*sections(output), "", ""]
    values = dict(line.split("=", 1) for line in parts[2].splitlines() if "=" in line)
    mtime = values.get("wal_mtime", "")
    raft = RaftPosition(values.get("snap", ""), values.get("wal", ""), float(mtime) if mtime else 0.0)
    return ManagerProbe(name, True, info=parse_swarm_info(parts[0]), sees_leader="leader=yes" in parts[1], raft=raft)
