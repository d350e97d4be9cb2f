"""Facts: a command to run on a node and a pure parser of its output (the pyinfra way).

Parsers are unit-tested with recorded outputs; the commands run over SSH in the tasks.
"""

from __future__ import annotations

import json
import shlex
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


def daemon_facts_command(config_path: str, pid_file: str) -> str:
    return (
        f"printf 'config_sha=%s\\n' \"$(sha256sum {config_path} 2>/dev/null | cut -d' ' -f1)\"; "
        "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\"; "
        f'printf \'running=%s\\n\' "$( (test -s {pid_file} && kill -0 "$(head -n1 {pid_file})") 2>/dev/null '
        '&& echo yes || echo no)"'
    )


@dataclass(frozen=True)
class DaemonFacts:
    config_sha: str
    systemd: bool
    running: bool


def parse_daemon_facts(output: str) -> DaemonFacts:
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return DaemonFacts(values.get("config_sha", ""), values.get("systemd") == "yes", values.get("running") == "yes")


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
    def converged(self) -> bool:
        running, _, rest = self.replicas.partition("/")
        wanted = rest.split()[0] if rest else ""  # "1/1 (max 1 per node)" -> "1"
        # Replicas alone are not enough: during a rolling update the old tasks still count.
        return wanted != "" and running == wanted and self.update in ("", "completed")


def stack_services_command(stack: str) -> str:
    """Replicas, then update states, then each service's tasks that are not running, in one round trip."""
    return (
        f"docker stack services {stack} --format '{{{{.Name}}}}|{{{{.Replicas}}}}' 2>/dev/null && echo --- && "
        f'ids=$(docker stack services -q {stack}) && [ -n "$ids" ] && '
        "docker service inspect --format '{{.Spec.Name}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' $ids "
        "&& echo --- && for id in $ids; do docker service ps $id --no-trunc "
        "--format \"$(docker service inspect --format '{{.Spec.Name}}' $id)|{{.Node}}|{{.CurrentState}}|{{.Error}}\"; "
        "done"
    )


def parse_services(output: str) -> tuple[ServiceState, ...]:
    """Parse `name|replicas` lines, `---`, `name|update state` lines, `---`, `name|node|state|error` lines."""
    replicas_part, _, rest = output.partition("---")
    updates_part, _, tasks_part = rest.partition("---")
    updates = dict(line.strip().split("|", 1) for line in updates_part.splitlines() if "|" in line)
    errors: dict[str, str] = {}
    for line in tasks_part.splitlines():
        name, node, state, error = [*line.strip().split("|", 3), "", "", ""][:4]
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
