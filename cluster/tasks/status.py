"""status: the cluster at a glance, nodes and services, read from a manager."""

from __future__ import annotations

from collections.abc import Sequence

from cluster.inventory import Inventory
from cluster.runners import Nodes
from cluster.tasks.bootstrap import find_leader, members


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def status_report(nodes: Nodes) -> str:
    inventory: Inventory = nodes.inventory
    leader = find_leader(nodes)
    roles = {n.name: n.role.value for n in inventory.nodes}
    ips = {n.name: str(n.private_ip) for n in inventory.nodes}
    listed = {m.hostname: m for m in members(nodes, leader)}
    node_rows = []
    for node in inventory.swarm_nodes:
        m = listed.get(node.name)
        if m is None:
            node_rows.append((node.name, roles[node.name], ips[node.name], "not joined", "-", "-"))
        else:
            node_rows.append(
                (node.name, roles[node.name], ips[node.name], m.status, m.availability, m.manager_status or "-")
            )
    services = nodes.run(leader, "docker service ls --format '{{.Name}}|{{.Mode}}|{{.Replicas}}|{{.Image}}'").stdout
    service_rows = [tuple(line.split("|")) for line in services.splitlines() if line.strip()]
    parts = [
        f"cluster {inventory.cluster} ({inventory.provider}); asked {leader.name}",
        "",
        table(("NODE", "ROLE", "ADDRESS", "STATUS", "AVAILABILITY", "MANAGER"), node_rows),
        "",
        table(("SERVICE", "MODE", "REPLICAS", "IMAGE"), service_rows) if service_rows else "no services",
    ]
    endpoints = "  ".join(f"{k}={v}" for k, v in sorted(inventory.endpoints.items()))
    parts += ["", f"endpoints: {endpoints}"]
    return "\n".join(parts)
