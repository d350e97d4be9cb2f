"""The swarm's membership as engines and managers see it: one engine's swarm state, the node list
(`docker node ls`, or `docker node inspect` for every field), the tasks running on given nodes, the
root CA, and the join tokens."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.facts import Fact
from cluster.facts.text import json_lines, parse_lines

DEFAULT_SNAPSHOT_INTERVAL = 10000  # swarmkit's


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
    snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL  # Raft log entries between snapshots (the swarm's spec)

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
        snapshot_interval=int(
            ((cluster.get("Spec") or {}).get("Raft") or {}).get("SnapshotInterval") or DEFAULT_SNAPSHOT_INTERVAL
        ),
    )


SWARM_INFO = Fact("docker info --format '{{json .Swarm}}'", parse_swarm_info)
# Only the engine's own state: answers while the swarm is locked or has no leader (a restored engine).
LOCAL_NODE_STATE = Fact("docker info --format '{{.Swarm.LocalNodeState}}'", str.strip)


@dataclass(frozen=True)
class SwarmNode:
    """A swarm node as a manager sees it. NODES (`docker node inspect`) gives every field; NODE_LIST
    (`docker node ls`) the identity, role, availability, state and manager status only."""

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

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"

    @property
    def manager_status(self) -> str:
        """leader | reachable | unreachable, "" for workers (`docker node ls`'s MANAGER STATUS, lower case)."""
        return "leader" if self.leader else self.reachability


def parse_node_list(output: str) -> tuple[SwarmNode, ...]:
    """`docker node ls --format '{{json .}}'`: Ready, Drain, Leader... mapped to the lower-case words of
    `docker node inspect`, so both reads give the same SwarmNode."""
    nodes = []
    for row in json_lines(output):
        status = str(row.get("ManagerStatus") or "")
        nodes.append(
            SwarmNode(
                node_id=str(row["ID"]),
                hostname=str(row["Hostname"]),
                role="manager" if status else "worker",
                availability=str(row["Availability"]).lower(),
                state=str(row["Status"]).lower(),
                leader=status == "Leader",
                reachability="reachable" if status == "Leader" else status.lower(),
            )
        )
    return tuple(nodes)


NODE_LIST = Fact("docker node ls --format '{{json .}}'", parse_node_list)

# A compact JSON template: one object a line, only the fields the planners read (full `{{json .}}`
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


def parse_nodes(output: str) -> tuple[SwarmNode, ...]:
    nodes = []
    for row in json_lines(output):
        labels = row.get("labels") or {}
        assert isinstance(labels, dict)
        nodes.append(
            SwarmNode(
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


NODES = Fact(NODES_COMMAND, parse_nodes)


# A task in one of these states may still have a container on its node (`docker node ps` writes them
# capitalised, then how long ago: "Running 2 minutes ago").
LIVE_TASK_STATES = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"})
HISTORY_MARK = "\\_"  # before the names of a slot's earlier tasks in some `docker ... ps` listings


def running_on(node_ids: Sequence[str]) -> Fact[tuple[str, ...]]:
    """`node task-name` of every task whose container may still run on the given nodes, those told to
    stop included. Drained, a node's tasks want Shutdown at once (`--filter desired-state=running`
    lists none), but each stops only when its own drain ends: an HTTP service finishes the requests it
    holds, up to its stop_grace_period. Stopping the node's engine before that cut them (a POST lost
    during `maintain-nodes`)."""
    command = "docker node ps " + " ".join(node_ids) + " --format '{{.Node}}|{{.Name}}|{{.CurrentState}}'"
    return Fact(command, parse_live_tasks)


def parse_live_tasks(output: str) -> tuple[str, ...]:
    live = []
    for line in parse_lines(output):
        node, _, rest = line.partition("|")
        name, _, state = rest.partition("|")
        if state.split(" ", 1)[0].lower() in LIVE_TASK_STATES:
            live.append(f"{node} {name.strip().removeprefix(HISTORY_MARK).strip()}")
    return tuple(live)


def join_token(role: str) -> Fact[str]:
    """The swarm's join token for `role` (manager | worker): a secret, held in memory only."""
    return Fact(f"docker swarm join-token -q {role}", str.strip)


# --- the swarm's certificate authority -----------------------------------------------------------


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


CA = Fact(
    "docker info --format '{{json .Swarm.Cluster.TLSInfo.CertIssuerPublicKey}}|{{.Swarm.Cluster.RootRotationInProgress}}'"
    " && docker node ls --format '{{.Hostname}}|{{.Status}}|{{.TLSStatus}}'",
    parse_ca,
)
