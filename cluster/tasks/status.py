"""status: the cluster at a glance. It asks every manager on its own, so it still answers when the swarm
lost quorum: which managers answer, how many Raft needs, and what to run. With quorum it shows the
nodes, the services and the tasks that should run but do not, with where and why, each service's
request and error rates from its stack's Prometheus, and (--map) the tasks running on each node. With
or without quorum it shows when each node's swarm certificate expires (and, with a leader, the root
CA's), with a WARN line for any under 30 days."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cluster.errors import CommandFailed, SwarmlabError
from cluster.facts import read
from cluster.facts.certificates import ROOT_CA, Certificate, NodeCertificate
from cluster.facts.listings import SERVICE_TABLE
from cluster.facts.managers import Quorum
from cluster.facts.prometheus import prometheus_vector
from cluster.facts.services import SwarmState, Task
from cluster.facts.swarm import SwarmNode
from cluster.facts.tasks import NODE_TASKS
from cluster.inventory import Node
from cluster.plans.autolock import locked_managers
from cluster.plans.recover import choose_survivor
from cluster.reads import (
    VipProbe,
    members,
    node_certificates,
    probe_managers,
    served_workloads,
    swarm_state,
    vip_probes,
)
from cluster.runners import KEY_CHANGED, KEY_UNKNOWN, Result, Runner
from cluster.session import Session

NO_LEADER = "does not have a leader"  # what a manager answers without quorum
WARN_BEFORE = timedelta(days=30)  # a certificate closer than this to its expiry gets a WARN line


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def managers_table(runner: Runner, quorum: Quorum) -> str:
    rows = []
    for probe in quorum.probes:
        node = runner.inventory.node(probe.name)
        if not probe.answers:
            rows.append((probe.name, str(node.private_ip), "no", probe.problem, "-"))
            continue
        state = probe.info.state if probe.info is not None else "?"
        role = "manager" if probe.is_manager else "not a manager"
        shown = "LOCKED (autolock)" if state == "locked" else f"{state}, {role}"
        rows.append((probe.name, str(node.private_ip), "yes", shown, "yes" if probe.sees_leader else "no"))
    return table(("MANAGER", "ADDRESS", "ANSWERS", "SWARM", "SEES A LEADER"), rows)


def locked_report(quorum: Quorum) -> list[str]:
    locked = locked_managers(quorum)
    if not locked:
        return []
    return [
        f"LOCKED: {', '.join(locked)} (swarm autolock: a manager whose engine restarted waits for the unlock "
        "key). Fix: `fab recover` unlocks it with the state directory's key.",
        "",
    ]


def vip_report(runner: Runner, probes: Sequence[VipProbe]) -> list[str]:
    """Two lbs: which holds the virtual IP (each lb asked on its own), and a WARN line when none or both
    do; with one lb (no probes) nothing, as before."""
    if not probes:
        return []
    inventory = runner.inventory
    vip = inventory.network.vip
    rows = []
    for probe in probes:
        node = inventory.node(probe.name)
        if probe.problem:
            rows.append((probe.name, str(node.private_ip), "no", f"? ({probe.problem})"))
        else:
            rows.append((probe.name, str(node.private_ip), "yes", f"yes ({probe.interface})" if probe.holds else "no"))
    holders = [p.name for p in probes if p.holds]
    silent = [p.name for p in probes if p.problem]
    lines = [table(("LB", "ADDRESS", "ANSWERS", f"HOLDS THE VIP {vip}"), rows)]
    if len(holders) > 1:
        lines.append(
            f"WARN: {' and '.join(holders)} both hold the virtual IP {vip}: they do not hear each other's VRRP "
            "adverts (split brain), and the public address reaches either. Fix: VRRP (IP protocol 112) between "
            "the two lbs (security group `lb`) and the same configuration on both (`fab keepalived`)"
        )
    elif not holders and not silent:
        lines.append(
            f"WARN: no lb holds the virtual IP {vip}: nothing answers at the public address. keepalived gives it "
            "up while HAProxy's stats page does not answer. Fix: `fab haproxy`, then `fab keepalived`"
        )
    elif not holders:
        lines.append(
            f"WARN: no lb that answers holds the virtual IP {vip} ({', '.join(silent)} did not answer). "
            "Fix: bring the silent lb back, or `fab haproxy` and `fab keepalived` on the other"
        )
    else:
        lines.append(f"the virtual IP {vip} is on {holders[0]}")
    return [*lines, ""]


def quorum_lost(quorum: Quorum) -> list[str]:
    lines = [
        f"QUORUM LOST: {quorum.summary()}.",
        "The services keep running on the workers, but the swarm cannot schedule, update or heal anything.",
    ]
    if locked := locked_managers(quorum):
        return [*lines, f"Fix: `fab recover` unlocks {', '.join(locked)}: the swarm's quorum comes back with them."]
    try:
        survivor = choose_survivor(quorum).name
    except SwarmlabError as error:
        return [*lines, f"Fix: {error}"]
    lines.append(
        f"Fix: `fab recover` re-forms the swarm from {survivor} (the most up-to-date manager that answers) "
        f"and brings the inventory's {len(quorum.probes)} managers back."
    )
    return lines


def not_running(state: SwarmState) -> list[tuple[str, str, str, str, str]]:
    """Tasks the swarm wants running that do not run (yet), with where and why."""
    names = {s.service_id: s.name for s in state.services}
    return [
        (names.get(t.service_id, t.service_id[:12]), str(t.slot or "-"), state.hostname(t.node_id), t.state, t.error)
        for t in sorted(state.tasks, key=lambda t: (names.get(t.service_id, ""), t.slot))
        if t.wanted and not t.running
    ]


def status_report(runner: Runner, now: datetime | None = None) -> str:
    return cluster_status(runner, now)[0]


def cluster_status(runner: Runner, now: datetime | None = None) -> tuple[str, Node | None]:
    """The report, and the manager that answered it with a leader (None without quorum): the rates and
    the map need a swarm that answers. `now` is the time certificates are measured against."""
    inventory = runner.inventory
    now = now or datetime.now(UTC)
    quorum = probe_managers(runner)
    lines = [
        f"cluster {inventory.cluster} ({inventory.provider})",
        "",
        managers_table(runner, quorum),
        "",
        *locked_report(quorum),
        *vip_report(runner, vip_probes(runner)),
    ]
    if not quorum.has_quorum:
        if quorum.probes and all(p.answers and not p.is_manager for p in quorum.probes) and not locked_managers(quorum):
            raise SwarmlabError("no manager is in a swarm (run `fab bootstrap` for a new cluster)")
        # Nodes off past their certificate's expiry are one way to lose quorum: show them here too.
        certificates = certificates_report(node_certificates(runner, inventory.swarm_nodes), None, now)
        return "\n".join([*lines, *quorum_lost(quorum), "", *certificates]), None
    leader = inventory.node(quorum.leader_seen_by)
    try:
        return "\n".join([*lines, *_with_quorum(runner, quorum, leader, now)]), leader
    except CommandFailed as error:
        if NO_LEADER not in error.output:
            raise
        # Quorum was lost between the probe and these questions (a leader steps down ~10 s after it
        # stops hearing a majority): say so rather than fail.
        changing = [
            f"{leader.name} saw a leader a moment ago, but the swarm has none now: the quorum is changing.",
            "Run `fab status` again in a few seconds: it says whether a new leader was elected or quorum is lost.",
        ]
        return "\n".join([*lines, *changing]), None


def _with_quorum(runner: Runner, quorum: Quorum, leader: Node, now: datetime) -> list[str]:
    inventory = runner.inventory
    listed = {m.hostname: m for m in members(runner, leader)}
    node_rows = []
    for node in inventory.swarm_nodes:
        m = listed.get(node.name)
        shown = (m.state, m.availability, m.manager_status) if m is not None else ()
        # As `docker node ls` writes them: Ready, Active, Leader.
        state = ("not joined", "-", "-") if m is None else tuple(word.capitalize() or "-" for word in shown)
        node_rows.append((node.name, node.role.value, str(node.private_ip), *state))
    service_rows = read(runner, leader, SERVICE_TABLE)
    stuck = not_running(swarm_state(runner, leader)) if service_rows else []
    endpoints = "  ".join(f"{k}={v}" for k, v in inventory.endpoints.model_dump(exclude_none=True).items())
    certificates = node_certificates(runner, inventory.swarm_nodes)
    root = root_ca(runner, leader)
    return [
        f"quorum: {quorum.summary()}; asked {leader.name}",
        "",
        table(("NODE", "ROLE", "ADDRESS", "STATUS", "AVAILABILITY", "MANAGER"), node_rows),
        "",
        table(("SERVICE", "MODE", "REPLICAS", "IMAGE"), service_rows) if service_rows else "no services",
        "",
        table(("NOT RUNNING", "SLOT", "NODE", "STATE", "ERROR"), stuck) if stuck else "every task that should run runs",
        "",
        f"endpoints: {endpoints}",
        "",
        *certificates_report(certificates, root, now, f"not read: {leader.name} gave none"),
    ]


def root_ca(runner: Runner, leader: Node) -> Certificate | None:
    """The root CA's certificate from the leader; None (shown as not read) when it gives none."""
    result = runner.run(leader, ROOT_CA.command, check=False)
    try:
        return ROOT_CA.parse(result.stdout) if result.ok else None
    except ValueError:
        return None


def expiry(certificate: Certificate) -> str:
    return certificate.not_after.strftime("%Y-%m-%d %H:%M UTC")


def days(count: int) -> str:
    return f"{count} day{'' if count == 1 else 's'}"


def certificate_warning(what: str, certificate: Certificate, now: datetime) -> str:
    """A WARN line for a certificate under WARN_BEFORE from its expiry (or past it), with the fix; '' if none."""
    left = certificate.days_left(now)
    when = expiry(certificate)
    if certificate.expired(now):
        ago = (now - certificate.not_after).days  # whole days since
        if what == "root CA":
            return (
                f"WARN: the swarm's root CA expired {days(ago)} ago ({when}): no node can renew its certificate. "
                "Fix: `fab rotate-ca` (a new root CA; nodes whose certificates expired then need `fab recover`)"
            )
        return (
            f"WARN: {what}'s swarm certificate expired {days(ago)} ago ({when}): it cannot rejoin the swarm by "
            "itself. Fix: `fab recover` makes it leave the swarm and join again"
        )
    if certificate.not_after - now >= WARN_BEFORE:
        return ""
    if what == "root CA":
        return (
            f"WARN: the swarm's root CA expires in {days(left)} ({when}). "
            "Fix: `fab rotate-ca` before then (it also renews every node's certificate)"
        )
    return (
        f"WARN: {what}'s swarm certificate expires in {days(left)} ({when}). Swarm renews it only while the node "
        f"is up and reaches a manager: keep {what} up (`fab rotate-ca` renews every node's certificate now)"
    )


def certificates_report(
    nodes: Sequence[NodeCertificate],
    root: Certificate | None,
    now: datetime,
    root_missing: str = "not read: no leader to ask",
) -> list[str]:
    """When each node's swarm certificate and the root CA expire (days left, date), then a WARN line for
    each one under WARN_BEFORE from its expiry. `root` None is shown with `root_missing`."""
    rows: list[tuple[str, str, str]] = []
    warnings: list[str] = []
    named = [(n.name, n.certificate, n.problem or "no certificate: in no swarm") for n in nodes]
    named.append(("root CA", root, root_missing))
    for name, certificate, missing in named:
        if certificate is None:
            rows.append((name, "-", missing))
            continue
        left = certificate.days_left(now)
        rows.append((name, expiry(certificate), "expired" if certificate.expired(now) else str(left)))
        warning = certificate_warning(name, certificate, now)
        if warning:
            warnings.append(warning)
    return [table(("CERTIFICATE", "EXPIRES", "DAYS LEFT"), rows), *warnings]


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
        rates = prometheus_vector(
            workers, route.port, route.path.rstrip("/"), rates_query(spec.requests, spec.errors), ("service", "kind")
        )
        title = f"requests and errors per second, last minute (Prometheus of {workload.name})"
        result = from_an_lb(session.runner, rates.command)
        try:
            if not result.ok:
                raise SwarmlabError(f"no worker answered on port {route.port}")
            parts.append(f"{title}:\n{rates_table(rates.parse(result.stdout))}")
        except (SwarmlabError, ValueError, KeyError, json.JSONDecodeError) as error:
            parts.append(f"{title}: Prometheus did not answer ({error})")
    return "\n\n".join(parts)


def from_an_lb(runner: Runner, command: str) -> Result:
    """`command` run on lb-1, or with two lbs on lb-2 when SSH cannot reach lb-1 (it may be the lb that
    died); with one lb an unreachable lb is the error it was."""
    *others, last = runner.inventory.lbs
    for lb in others:
        try:
            return runner.run(lb, command, check=False)
        except CommandFailed as error:
            if error.exit_code is not None or error.hint in (KEY_CHANGED, KEY_UNKNOWN):
                raise
    return runner.run(last, command, check=False)


def format_map(nodes: Sequence[SwarmNode], tasks: Sequence[Task]) -> str:
    """Each node (role, status, availability) and the tasks running on it, image by its short name."""
    lines = []
    for node in sorted(nodes, key=lambda n: (not n.is_manager, n.hostname)):
        mine = sorted((t for t in tasks if t.node == node.hostname), key=lambda t: t.name)
        role = f"manager, {node.manager_status}" if node.is_manager else "worker"
        lines.append(f"{node.hostname} ({role}; {node.state}, {node.availability}): {len(mine)} task(s)")
        lines.extend(f"  {t.name:<32} {t.image.rsplit('/', 1)[-1]:<28} {t.current_state}" for t in mine)
    return "\n".join(lines)


def cluster_map(runner: Runner, leader: Node) -> str:
    tasks = read(runner, leader, NODE_TASKS)
    return "cluster map (running tasks per node):\n" + format_map(members(runner, leader), tasks)
