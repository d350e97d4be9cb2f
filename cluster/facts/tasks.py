"""Tasks as the CLI lists them: the tasks running on every node (`fab status --map`), and every task
Swarm keeps for one service (`fab logs`). Both give the task's name and node by name (cluster/facts/
services.py's Task, with the fields these listings have)."""

from __future__ import annotations

import shlex

from cluster.facts import Fact
from cluster.facts.services import Task


def parse_node_tasks(output: str) -> tuple[Task, ...]:
    seen: dict[tuple[str, str], Task] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0]:
            node, name, current, image = parts
            task = Task(
                desired="running",
                state=current.split()[0].lower() if current.strip() else "",
                image=image,
                name=name,
                node=node,
                current_state=current,
            )
            seen.setdefault((node, name), task)
    return tuple(seen.values())


# Every node's running tasks, one node at a time: `docker node ps A B C` repeats tasks across nodes.
NODE_TASKS = Fact(
    "for n in $(docker node ls -q); do docker node ps $n --filter desired-state=running "
    "--format '{{.Node}}|{{.Name}}|{{.CurrentState}}|{{.Image}}'; done",
    parse_node_tasks,
)


def parse_service_tasks(output: str) -> tuple[Task, ...]:
    found = []
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0]:
            task_id, name, node = parts
            slot = name.rpartition(".")[2]
            found.append(Task(task_id=task_id, slot=int(slot) if slot.isdigit() else 0, name=name, node=node))
    return tuple(found)


def service_tasks(service: str) -> Fact[tuple[Task, ...]]:
    """Every task Swarm keeps for the service (running ones and the recent history of each slot)."""
    return Fact(
        f"docker service ps --no-trunc --format '{{{{.ID}}}}|{{{{.Name}}}}|{{{{.Node}}}}' {shlex.quote(service)}",
        parse_service_tasks,
    )
