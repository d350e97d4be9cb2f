"""status: the cluster at a glance, read from a manager: nodes and services, each service's request and
error rates from its stack's Prometheus, and (--map) the tasks running on each node."""

from __future__ import annotations

import json
from collections.abc import Sequence

from cluster.errors import SwarmlabError
from cluster.facts import (
    NODE_TASKS_COMMAND,
    NodeTask,
    SwarmNode,
    parse_node_tasks,
    parse_prometheus_vector,
    prometheus_query_command,
)
from cluster.inventory import Node
from cluster.runners import Runner
from cluster.session import Session
from cluster.tasks.haproxy import served_workloads
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


def rates_query(requests: str, errors: str) -> str:
    """Both of a bundle's queries in one round trip, told apart by a `kind` label."""
    return (
        f'label_replace(({requests}), "kind", "requests", "", "") '
        f'or label_replace(({errors}), "kind", "errors", "", "")'
    )


def rates_table(samples: dict[tuple[str, ...], float]) -> str:
    """SERVICE  REQ/S  ERR/S, one line per service that has a request rate (no errors there: 0)."""
    services = sorted({service for service, kind in samples if kind == "requests" and service})
    rows = [
        (service, f"{samples[(service, 'requests')]:.2f}", f"{samples.get((service, 'errors'), 0.0):.2f}")
        for service in services
    ]
    return table(("SERVICE", "REQ/S", "ERR/S"), rows) if rows else "no request rates yet"


def rates_report(session: Session, leader: Node) -> str:
    """Each served stack's request and error rates per service, from its Prometheus, asked from the lb
    node (on a cloud the workers' service ports accept HAProxy's node only); a line saying why when
    Prometheus does not answer."""
    parts = []
    for workload in served_workloads(session, leader):
        spec, route = workload.manifest.prometheus, workload.manifest.prometheus_route
        if spec is None or route is None:
            continue
        workers = [str(w.private_ip) for w in session.inventory.workers]
        command = prometheus_query_command(
            workers, route.port, route.path.rstrip("/"), rates_query(spec.requests, spec.errors)
        )
        title = f"requests and errors per second, last minute (Prometheus of {workload.name})"
        result = session.runner.run(session.inventory.lb, command, check=False)
        try:
            if not result.ok:
                raise SwarmlabError(f"no worker answered on port {route.port}")
            parts.append(f"{title}:\n{rates_table(parse_prometheus_vector(result.stdout, 'service', 'kind'))}")
        except (SwarmlabError, ValueError, KeyError, json.JSONDecodeError) as error:
            parts.append(f"{title}: Prometheus did not answer ({error})")
    return "\n\n".join(parts)


def format_map(nodes: Sequence[SwarmNode], tasks: Sequence[NodeTask]) -> str:
    """Each node (role, status, availability) and the tasks running on it, image by its short name."""
    lines = []
    for node in sorted(nodes, key=lambda n: (not n.is_manager, n.hostname)):
        mine = sorted((t for t in tasks if t.node == node.hostname), key=lambda t: t.name)
        role = f"manager, {node.manager_status.lower()}" if node.is_manager else "worker"
        lines.append(
            f"{node.hostname} ({role}; {node.status.lower()}, {node.availability.lower()}): {len(mine)} task(s)"
        )
        lines.extend(f"  {t.name:<32} {t.image.rsplit('/', 1)[-1]:<28} {t.state}" for t in mine)
    return "\n".join(lines)


def cluster_map(runner: Runner, leader: Node) -> str:
    tasks = parse_node_tasks(runner.run(leader, NODE_TASKS_COMMAND).stdout)
    return "cluster map (running tasks per node):\n" + format_map(members(runner, leader), tasks)
