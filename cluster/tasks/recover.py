"""recover: a swarm that lost quorum, re-formed from the most up-to-date manager that answers, and the
inventory's managers brought back one at a time (cluster/plans/recover.py says why and how); the
workers whose swarm certificate expired made to leave and join again; also the bringing back of every
node after `restore --swarm`. What follows (the registry's trust for
re-created engines, drain-managers, converge) is other tasks' steps: cluster/flows.py."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from cluster.errors import CommandFailed
from cluster.facts import read
from cluster.facts.autolock import KEY_ENCRYPTED
from cluster.facts.managers import Quorum
from cluster.facts.swarm import NODES, SwarmNode
from cluster.inventory import Node
from cluster.jointokens import read_join_tokens
from cluster.plans.autolock import plan_unlock
from cluster.plans.recover import (
    RecoverRefused,
    Rejoined,
    choose_survivor,
    expired_nodes,
    plan_reform,
    plan_rejoin,
)
from cluster.plans.swarm import TokenRole, token_secret, tokens_needed
from cluster.progress import PhaseResult
from cluster.reads import locked_nodes, node_certificate, node_certificates, probe_manager, probe_managers
from cluster.session import Session
from cluster.unlockkeys import unlock_secrets


def utc_now() -> datetime:
    """The time certificates are measured against (the operator's clock; tests set their own)."""
    return datetime.now(UTC)


def _ready_manager(name: str, listed: tuple[SwarmNode, ...]) -> bool:
    return any(
        n.hostname == name and n.role == "manager" and n.state == "ready" and n.reachability == "reachable"
        for n in listed
    )


def _tokens(session: Session, leader: Node, roles: set[TokenRole]) -> dict[str, str]:
    return {token_secret(role): token for role, token in read_join_tokens(session.runner, leader, roles).items()}


def bring_back(
    session: Session,
    node: Node,
    leader: Node,
    progress: PhaseResult,
    role: TokenRole = TokenRole.MANAGER,
    *,
    restored: list[str] | None = None,
) -> str:
    """One node of the inventory back as a member with `role`; returns why not, or ''. A node whose
    machine the provider had to bring back is added to `restored`."""
    runner = session.runner
    probe = probe_manager(runner, node)  # the same questions answer for a worker (it sees no leader)
    if not probe.answers:
        progress.note(f"{node.name} does not answer ({probe.problem})")
        if not session.provider.restore_node(session.config, node, session.executor(), progress):
            return "" if session.dry_run else f"{node.name}: {probe.problem}"
        if restored is not None:
            restored.append(node.name)
        probe = probe_manager(runner, node)
        if not probe.answers:
            return f"{node.name} still does not answer: {probe.problem}"
    if probe.info is not None and probe.info.state == "locked" and not session.dry_run:
        _unlock(session, [node.name], progress)  # back with its own state (it leaves it below if stale)
        probe = probe_manager(runner, node)
    listed = read(runner, leader, NODES)
    certificate = node_certificate(runner, node).certificate
    expired = certificate is not None and certificate.expired(utc_now())
    if expired and certificate is not None:
        progress.note(f"{node.name}'s swarm certificate expired {certificate.not_after:%Y-%m-%d %H:%M} UTC")
    plan = plan_rejoin(node, probe, listed, leader, role, expired=expired)
    needed = tokens_needed(plan)
    tokens = _tokens(session, leader, needed) if needed and not session.dry_run else {}
    session.executor(secrets=tokens).execute(plan, progress)
    return ""


def bring_back_all(
    session: Session, leader: Node, others: Sequence[tuple[Node, TokenRole]], progress: PhaseResult, unfinished: str
) -> Rejoined:
    """Each node back with its role, one at a time."""
    restored: list[str] = []
    problems = [bring_back(session, node, leader, progress, role, restored=restored) for node, role in others]
    return Rejoined(problems, restored, unfinished)


# A leader that lost its majority steps down after Raft's election timeout (about 10 s), and a manager
# asked meanwhile still "sees" it: a leader seen while fewer than a majority answer is asked again.
QUORUM_SETTLE = 45.0
QUORUM_RETRY = 3.0
REGAIN_TIMEOUT = 60.0  # managers back and unlocked: until they elect a leader
LEADERLESS = ("does not have a leader", "context deadline exceeded")


def settled_quorum(session: Session, progress: PhaseResult) -> tuple[Quorum, tuple[SwarmNode, ...]]:
    """The managers' answers once they agree with themselves: quorum lost, or quorum with the node
    list a leader gives (a manager that cannot give it while it "sees" a leader is asked again)."""
    runner, deadline = session.runner, time.monotonic() + QUORUM_SETTLE
    while True:
        quorum = probe_managers(runner)
        if not quorum.has_quorum:
            return quorum, ()
        leader = session.inventory.node(quorum.leader_seen_by)
        late = time.monotonic() > deadline
        if len(quorum.answering) >= quorum.needed or late:
            # Past the deadline, a leader still seen is real: the silent managers are only out of our reach.
            try:
                return quorum, read(runner, leader, NODES)
            except CommandFailed as error:
                if late or not any(marker in error.output for marker in LEADERLESS):
                    raise
        progress.note(f"{leader.name} still sees a leader, but {quorum.summary()}: asking again while Raft settles")
        time.sleep(QUORUM_RETRY)


def _unlock(session: Session, locked: Sequence[str], progress: PhaseResult) -> None:
    session.executor(secrets=unlock_secrets(session.state, locked)).execute(plan_unlock(locked), progress)


def regain_quorum(session: Session, quorum: Quorum, progress: PhaseResult) -> Quorum:
    """Under autolock the swarm cannot be re-formed (moby/moby#36852): bring the silent managers'
    machines back through the provider (a stopped one returns with its Raft state), unlock those that
    come back locked, and ask the managers again."""
    for probe in quorum.probes:
        if not probe.answers:
            progress.note(f"{probe.name} does not answer ({probe.problem})")
            session.provider.restore_node(
                session.config, session.inventory.node(probe.name), session.executor(), progress
            )
    if session.dry_run:
        return quorum
    locked = locked_nodes(session.runner, session.inventory.managers)
    if locked:
        _unlock(session, locked, progress)
    # Unlocked managers elect a leader within Raft's election timeout (about 10 s), not at once.
    deadline = time.monotonic() + REGAIN_TIMEOUT
    while not (quorum := settled_quorum(session, progress)[0]).has_quorum and time.monotonic() < deadline:
        time.sleep(QUORUM_RETRY)
    return quorum


def reform_quorum(session: Session, unlocked: Sequence[str] = ()) -> tuple[Node, bool]:
    """The manager the swarm runs from after this phase, and whether it had to be re-formed.
    `unlocked`: the managers an unlock step before this one unlocked (that may be all recover had to do)."""
    inventory = session.inventory
    with session.phase("recover-quorum", "re-form the swarm from the most up-to-date manager that answers") as p:
        quorum, listed = settled_quorum(session, p)
        acted = bool(unlocked)
        if not quorum.has_quorum and read(session.runner, inventory.node(choose_survivor(quorum).name), KEY_ENCRYPTED):
            p.note(f"quorum lost: {quorum.summary()}; the swarm is autolocked: bringing the managers back instead")
            quorum, acted = regain_quorum(session, quorum, p), True
            if session.dry_run:
                p.planned("would unlock the managers that come back locked, then bring back the rest", True)
                return inventory.node(choose_survivor(quorum).name), True  # nothing more to plan without quorum
            if not quorum.has_quorum:
                raise RecoverRefused(
                    f"quorum lost for good: {quorum.summary()}, and the swarm is autolocked, so it cannot be re-formed "
                    "from the managers left (`docker swarm init --force-new-cluster` cannot take the unlock key: "
                    "moby/moby#36852). Fix: bring a lost manager's machine back with its disk, or restore the swarm "
                    "state from a backup (`fab restore --swarm`: backups are taken unlocked)"
                )
            listed = read(session.runner, inventory.node(quorum.leader_seen_by), NODES)
        if quorum.has_quorum:
            leader = inventory.node(quorum.leader_seen_by)
            missing = [m.name for m in inventory.managers if not _ready_manager(m.name, listed)]
            # The leader is not among them: it leads, so its certificate holds (and it is never made to leave).
            others = [n for n in inventory.swarm_nodes if n.name != leader.name]
            expired = expired_nodes(node_certificates(session.runner, others), utc_now())
            if not missing and not expired and acted:
                p.note(f"the swarm has quorum again ({quorum.summary()}): every manager of the inventory is back")
                return leader, False
            if not missing and not expired:
                raise RecoverRefused(
                    f"the swarm has quorum ({quorum.summary()}; {leader.name} sees a leader), every manager of "
                    "the inventory is a Ready member and no node's swarm certificate has expired: nothing to "
                    "recover, and forcing a new cluster now would throw away the other managers' Raft membership. "
                    "`fab status` shows the cluster"
                )
            back = sorted({*missing, *expired}, key=[n.name for n in inventory.swarm_nodes].index)
            p.note(f"the swarm has quorum ({quorum.summary()}): not re-formed; to bring back: {', '.join(back)}")
            return leader, False
        survivor = choose_survivor(quorum)
        leader = inventory.node(survivor.name)
        p.note(f"quorum lost: {quorum.summary()}; {leader.name} has the most up-to-date Raft log of those")
        session.executor().execute(plan_reform(leader, survivor, inventory.managers), p)
        return leader, True


def bring_back_managers(session: Session, leader: Node, reformed: bool) -> Rejoined | None:
    """Every other manager of the inventory back, one at a time; None in a dry run of a re-formed
    swarm (nothing was re-formed, so there is nothing to bring back to, nor to settle after)."""
    inventory = session.inventory
    with session.phase("restore-managers", "bring each manager of the inventory back, one at a time") as p:
        if session.dry_run and reformed:
            for manager in inventory.managers:
                if manager.name != leader.name:
                    p.planned(f"would bring back {manager.name}: its machine if lost, leave, join as manager", True)
            return None
        others = [(m, TokenRole.MANAGER) for m in inventory.managers if m.name != leader.name]
        return bring_back_all(session, leader, others, p, "the swarm is re-formed, but some managers are not back")


def bring_back_expired(session: Session, leader: Node) -> Rejoined | None:
    """Every worker whose swarm certificate expired, made to leave and join again, one at a time (the
    managers are brought back, expired or not, by restore-managers); None when there is none, or in a
    dry run."""
    inventory = session.inventory
    with session.phase("restore-expired", "bring back each worker whose swarm certificate expired") as p:
        certificates = node_certificates(session.runner, inventory.workers)
        expired = expired_nodes(certificates, utc_now())
        for unread in (c for c in certificates if c.problem):
            p.note(f"{unread.name}'s certificate not read ({unread.problem}): left as it is")
        if not expired:
            p.note("no worker's swarm certificate has expired")
            return None
        if session.dry_run:
            for name in expired:
                p.planned(f"would bring back {name}: its certificate expired; leave, join as worker", True)
            return None
        others = [(inventory.node(name), TokenRole.WORKER) for name in expired]
        return bring_back_all(session, leader, others, p, "some workers whose certificate expired are not back")


def bring_back_members(session: Session, leader: Node) -> Rejoined | None:
    """After `restore --swarm` on `leader`: every other node back, one at a time (stale ones leave and
    join again); None in a dry run (the swarm state was not restored)."""
    inventory = session.inventory
    with session.phase("restore-members", "bring every other node back, one at a time") as p:
        others = [(m, TokenRole.MANAGER) for m in inventory.managers if m.name != leader.name]
        others += [(w, TokenRole.WORKER) for w in inventory.workers]
        if session.dry_run:
            for node, role in others:
                p.planned(f"would bring back {node.name}: its machine if lost, leave stale state, join as {role}", True)
            return None
        return bring_back_all(session, leader, others, p, "the swarm state is restored, but some nodes are not back")
