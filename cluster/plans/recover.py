"""Recovering a swarm that lost quorum, pure (Docker's swarm admin guide, "Recover from losing the
quorum"): re-form the swarm from the most up-to-date manager that answers with
`docker swarm init --force-new-cluster`, remove the lost managers from the node list, then bring the
managers of the inventory back one at a time: a manager that returns with stale swarm state leaves it
(`docker swarm leave --force`) and joins again.

One at a time on purpose: two stale managers up together could still form a majority of the old
Raft membership and elect a leader of their own.

A node whose swarm certificate expired (it was off past the expiry: Swarm renews a certificate only
while its node is up) cannot rejoin by itself (moby/moby#24132): it too leaves and joins again, with a
new certificate, whether or not quorum was lost.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cluster.errors import SwarmlabError
from cluster.facts.certificates import NodeCertificate
from cluster.facts.managers import NEWEST_SNAPSHOT_COMMAND, ManagerProbe, Quorum
from cluster.facts.swarm import NODES, SwarmNode
from cluster.inventory import Node
from cluster.operations import Plan, Run, Wait
from cluster.plans.swarm import TokenRole, join_command, token_secret
from cluster.waiting import Verdict
from topology import SWARM_PORT

LEADER_TIMEOUT = 90
JOIN_TIMEOUT = 120
SNAPSHOT_TRIES = 30  # seconds, one write a second


class RecoverRefused(SwarmlabError):
    """Recovery would be wrong or impossible now; the message says why and what to do."""


def choose_survivor(quorum: Quorum) -> ManagerProbe:
    """The answering manager with the most up-to-date Raft log (the first in the inventory on a tie)."""
    candidates = [p for p in quorum.answering if p.info is not None and p.info.state == "active"]
    locked = [p.name for p in quorum.probes if p.info is not None and p.info.state == "locked"]
    if not candidates:
        hint = f" ({', '.join(locked)} locked: `fab recover` unlocks them first)" if locked else ""
        raise RecoverRefused(
            "no manager answers with its swarm state, so there is nothing to re-form the swarm from"
            f"{hint}. Fix: bring a manager's machine back (lab: `fab lab-up` starts stopped nodes), or restore "
            "the swarm state from a backup (`fab restore --swarm`)"
        )
    order = {p.name: i for i, p in enumerate(quorum.probes)}
    return max(candidates, key=lambda p: (p.raft.rank, -order[p.name]))


def remove_command(node_id: str, role: str) -> str:
    """Take a lost node out of the node list.

    A manager still in the Raft membership must be demoted before removal; one that
    --force-new-cluster dropped from it cannot be demoted ("can't find manager in raft memberlist")
    and is removed as it is. So the demote may fail, and the removal's error is the one that counts.
    """
    demote = f"docker node demote {node_id} >/dev/null 2>&1; " if role == "manager" else ""
    return f"{demote}docker node rm --force {node_id}"


def leader_verdict(output: str) -> Verdict:
    leaders = [n.hostname for n in NODES.parse(output) if n.leader]
    return Verdict.ready(f"{leaders[0]} leads") if leaders else Verdict.waiting("no leader yet")


def plan_reform(survivor: Node, probe: ManagerProbe, managers: Sequence[Node]) -> Plan:
    """Re-form the swarm on the survivor, then take every other manager out of the node list (they
    come back later as new members) and snapshot the result. Join tokens are rotated: the lost
    machines held the old ones."""
    assert probe.info is not None
    ip = survivor.private_ip
    by_ip = {f"{m.private_ip}:{SWARM_PORT}": m.name for m in managers}
    operations: list[Run | Wait] = [
        Run(
            survivor.name,
            f"docker swarm init --force-new-cluster --advertise-addr {ip} --listen-addr {ip}:{SWARM_PORT}",
            f"swarm re-formed on {survivor.name}, the most up-to-date manager that answers",
        ),
        Wait(survivor.name, NODES.command, leader_verdict, f"{survivor.name} leads", LEADER_TIMEOUT, 2),
        *(
            Run(
                survivor.name,
                f"docker swarm join-token --rotate -q {role.value} >/dev/null",
                f"{role.value} join token rotated",
            )
            for role in TokenRole
        ),
    ]
    for address, node_id in zip(probe.info.managers, probe.info.manager_ids, strict=False):
        if node_id and node_id != probe.info.node_id:
            name = by_ip.get(address, address)
            operations.append(
                Run(survivor.name, remove_command(node_id, "manager"), f"{name} ({node_id[:12]}) removed")
            )
    operations.append(fresh_snapshot(survivor.name, probe.raft.snapshot, probe.info.snapshot_interval))
    return Plan(tuple(operations))


def fresh_snapshot(node: str, before: str, interval: int) -> Run:
    """A Raft snapshot of the re-formed swarm, taken at once (moby/swarmkit#603). Without it a joining
    manager catches up by replaying the whole log, the lost members' entries included, and with two
    members Raft needs it to commit anything: the first manager back took 25 to 130 s to be Ready on
    labs whose log had grown, about a second with a snapshot. Swarm snapshots every `interval` entries:
    interval 1 and a write each second (the update itself) until a new snapshot file appears (30 s at
    most), then the interval as it was, whatever happened."""
    command = (
        f"before={shlex.quote(before)}; now=; n=0; "
        f'while [ "$n" -lt {SNAPSHOT_TRIES} ]; do '
        f"docker swarm update --snapshot-interval 1 >/dev/null; now=$({NEWEST_SNAPSHOT_COMMAND}); "
        '[ -n "$now" ] && [ "$now" != "$before" ] && break; sleep 1; n=$((n + 1)); done; '
        f"docker swarm update --snapshot-interval {interval} >/dev/null && "
        '[ -n "$now" ] && [ "$now" != "$before" ]'
    )
    hint = "the swarm is re-formed; a manager joining it may take minutes to catch up (`fab recover` again brings them back)"
    return Run(node, command, f"a fresh Raft snapshot on {node}: joining managers start from it", hint=hint)


def member_ready_verdict(name: str, role: TokenRole, node_id: str = "") -> Callable[[str], Verdict]:
    """`name` is a Ready member with `role` (a manager must also be reachable); the entry with
    `node_id`, when given."""

    def verdict(output: str) -> Verdict:
        for node in NODES.parse(output):
            if node.hostname == name and (not node_id or node.node_id == node_id):
                reachable = role is TokenRole.WORKER or node.reachability == "reachable"
                if node.role == role.value and node.state == "ready" and reachable:
                    return Verdict.ready(
                        f"{name} is a Ready{', reachable' if role is TokenRole.MANAGER else ''} {role.value}"
                    )
                return Verdict.waiting(f"{name}: {node.role}, {node.state}, {node.reachability or '-'}")
        return Verdict.waiting(f"{name} is not in the node list yet")

    return verdict


def manager_ready_verdict(name: str, node_id: str = "") -> Callable[[str], Verdict]:
    return member_ready_verdict(name, TokenRole.MANAGER, node_id)


def expired_nodes(certificates: Sequence[NodeCertificate], now: datetime) -> tuple[str, ...]:
    """The nodes whose swarm certificate has expired (one that could not be read is not among them)."""
    return tuple(c.name for c in certificates if c.certificate is not None and c.certificate.expired(now))


def plan_rejoin(
    node: Node,
    probe: ManagerProbe,
    members: Sequence[SwarmNode],
    leader: Node,
    role: TokenRole = TokenRole.MANAGER,
    *,
    expired: bool = False,
) -> Plan:
    """Bring one node of the inventory back as a member with `role`: nothing if it is one, a wait if it
    is one that is returning, else remove its old entries, leave its stale state and join again. A node
    whose certificate `expired` is never waited for (it cannot come back as it is): it leaves and joins."""
    name = node.name
    live = probe.info.node_id if probe.info is not None and probe.info.in_swarm else ""
    entry = next((m for m in members if live and m.node_id == live), None)
    if entry is not None and entry.role == role.value and not expired:
        ready = entry.state == "ready" and (role is TokenRole.WORKER or entry.reachability == "reachable")
        if ready:
            return Plan(notes=(f"{name} is a Ready {role.value}",))
        verdict = member_ready_verdict(name, role, live)
        return Plan((Wait(leader.name, NODES.command, verdict, f"{name} back", JOIN_TIMEOUT, 2),))
    operations: list[Run | Wait] = []
    for old in (m for m in members if m.hostname == name):
        operations.append(
            Run(leader.name, remove_command(old.node_id, old.role), f"old entry of {name} removed ({old.state})")
        )
    # An expired node's engine may say "error" rather than active or pending: it leaves all the same.
    stale = expired and probe.info is not None and probe.info.state != "inactive"
    if live or stale:
        what = "the swarm (its certificate expired)" if expired else "its stale swarm state"
        operations.append(Run(name, "docker swarm leave --force", f"{name} left {what}"))
    operations += [
        Run(name, join_command(node, leader, slow_ok=True), f"{name} joined as {role.value}", stdin=token_secret(role)),
        Wait(leader.name, NODES.command, member_ready_verdict(name, role), f"{name} Ready", JOIN_TIMEOUT, 2),
    ]
    return Plan(tuple(operations))


@dataclass(frozen=True)
class Rejoined:
    """Nodes brought back: why each one is not (or ''), which nodes' machines the provider had to
    bring back (their engines are new), and what to say if some are not back."""

    problems: list[str]
    restored: list[str]
    unfinished: str

    def then(self, other: Rejoined | None) -> Rejoined:
        """These nodes and `other`'s, brought back in a later phase."""
        if other is None:
            return self
        failed = [r.unfinished for r in (self, other) if any(r.problems)]
        unfinished = "; ".join(failed) or self.unfinished
        return Rejoined(self.problems + other.problems, self.restored + other.restored, unfinished)

    def raise_if_missing(self) -> None:
        """The nodes that did not come back, as an error (after the steps that settle the others)."""
        failed = [problem for problem in self.problems if problem]
        if failed:
            raise SwarmlabError(
                f"{self.unfinished}:\n"
                + "\n".join(f"- {problem}" for problem in failed)
                + "\nFix: bring their machines back, then run `fab recover`"
            )
