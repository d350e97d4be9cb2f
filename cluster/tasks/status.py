"""status: the cluster at a glance, nodes and services, read from a manager."""

from __future__ import annotations

from collections.abc import Sequence

from cluster.runners import Runner
from cluster.tasks.swarm import find_leader, members


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def status_report(runner: Runner) -> str:
    inventory = runner.inventory
    leader = find_leader(runner)
    listed = {m.hostname: m for m in members(runner, leader)}
    node_rows = []
    for node in inventory.swarm_nodes:
        m = listed.get(node.name)
        state = ("not joined", "-", "-") if m is None else (m.status, m.availability, m.manager_status or "-")
        node_rows.append((node.name, node.role.value, str(node.private_ip), *state))
    services = runner.run(leader, "docker service ls --format '{{.Name}}|{{.Mode}}|{{.Replicas}}|{{.Image}}'").stdout
    service_rows = [tuple(line.split("|")) for line in services.splitlines() if line.strip()]
    endpoints = "  ".join(f"{k}={v}" for k, v in inventory.endpoints.model_dump(exclude_none=True).items())
    return "\n".join(
        [
            f"cluster {inventory.cluster} ({inventory.provider}); asked {leader.name}",
            "",
            table(("NODE", "ROLE", "ADDRESS", "STATUS", "AVAILABILITY", "MANAGER"), node_rows),
            "",
            table(("SERVICE", "MODE", "REPLICAS", "IMAGE"), service_rows) if service_rows else "no services",
            "",
            f"endpoints: {endpoints}",
        ]
    )
