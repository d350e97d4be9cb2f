"""Facts: a command to run on a node and a pure parser of its output (the pyinfra way).

Parsers are unit-tested with recorded outputs; the commands run over SSH in the tasks.
"""

from __future__ import annotations

import json
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
