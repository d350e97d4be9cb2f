"""Recovering from quorum loss, pure: which manager the swarm is re-formed from, what it runs there,
and how each manager comes back (one at a time; stale ones leave and join again)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cluster.facts.managers import ManagerProbe, Quorum, RaftPosition, parse_manager_probe
from cluster.facts.swarm import SwarmNode, parse_nodes, parse_swarm_info
from cluster.inventory import Inventory
from cluster.operations import Run, Wait
from cluster.plans.recover import (
    RecoverRefused,
    choose_survivor,
    manager_ready_verdict,
    plan_reform,
    plan_rejoin,
)
from cluster.plans.swarm import JOIN_CONTINUES, TokenRole, token_secret
from tests.unit.fake_runner import lab_shaped_inventory
from tests.unit.recorded import recorded

MANAGER = recorded("swarm_manager")
NODES = parse_nodes(recorded("nodes"))


@pytest.fixture
def inventory() -> Inventory:
    return lab_shaped_inventory()


def probe(
    name: str, wal_mtime: float = 1.0, snapshot: str = "", leader: bool = False, node_id: str = ""
) -> ManagerProbe:
    """A manager that answers; its own id is the one the recorded manager knows it by, unless given."""
    info = parse_swarm_info(MANAGER)
    own = {"manager-1": "03sjtrjil5vg9iath4imcurlg", "manager-2": "6q6mxl2suqt7mr6qfb7tq79x4"}
    info = replace(info, node_id=node_id or own.get(name, "nh4ybhmyu5socep2xf33si6g4"))
    wal = "0000000000000000-0000000000000000.wal"
    return ManagerProbe(name, True, info=info, sees_leader=leader, raft=RaftPosition(snapshot, wal, wal_mtime))


def silent(name: str) -> ManagerProbe:
    return ManagerProbe(name, False, problem="unreachable over SSH")


def test_a_probe_parses_swarm_state_leader_and_raft_position() -> None:
    output = f"{MANAGER}\n---\nleader=no\n---\nsnap=\nwal=0000000000000001-00000000000003e8.wal\nwal_mtime=17.5\n"
    found = parse_manager_probe("manager-3", output)
    assert found.is_manager and not found.sees_leader and found.raft.rank == (-1, 1000, 17.5)
    assert found.info is not None and len(found.info.manager_ids) == 3


def test_quorum_counts_the_raft_membership_and_what_it_needs() -> None:
    quorum = Quorum((silent("manager-1"), silent("manager-2"), probe("manager-3")))
    assert not quorum.has_quorum and quorum.summary() == "1 of 3 managers answer; Raft needs 2"
    assert Quorum((probe("manager-1", leader=True), probe("manager-2"))).has_quorum


def test_the_survivor_is_the_most_up_to_date_manager_that_answers() -> None:
    newer_snapshot = probe("manager-2", wal_mtime=1.0, snapshot="0000000000000002-0000000000002710.snap")
    quorum = Quorum((probe("manager-1", wal_mtime=9.0), newer_snapshot, silent("manager-3")))
    assert choose_survivor(quorum).name == "manager-2"
    assert choose_survivor(Quorum((probe("manager-1", 5.0), probe("manager-2", 6.0)))).name == "manager-2"
    assert choose_survivor(Quorum((probe("manager-1", 5.0), probe("manager-2", 5.0)))).name == "manager-1"


def test_no_manager_with_state_means_nothing_to_reform_from() -> None:
    with pytest.raises(RecoverRefused, match=r"nothing to re-form the swarm from.*fab restore --swarm"):
        choose_survivor(Quorum((silent("manager-1"), silent("manager-2"), silent("manager-3"))))
    locked = replace(probe("manager-1"), info=replace(parse_swarm_info(MANAGER), state="locked"))
    with pytest.raises(RecoverRefused, match="manager-1 locked: `fab recover` unlocks them first"):
        choose_survivor(Quorum((locked, silent("manager-2"), silent("manager-3"))))


def test_reform_forces_a_new_cluster_on_the_survivor_and_removes_the_other_managers(inventory: Inventory) -> None:
    survivor = probe("manager-3")
    plan = plan_reform(inventory.node("manager-3"), survivor, inventory.managers)
    commands = [r.command for r in plan.runs]
    assert commands[0] == (
        "docker swarm init --force-new-cluster --advertise-addr 10.20.0.13 --listen-addr 10.20.0.13:2377"
    )
    assert isinstance(plan.operations[1], Wait) and plan.operations[1].what == "manager-3 leads"
    assert commands[1:3] == [
        "docker swarm join-token --rotate -q manager >/dev/null",
        "docker swarm join-token --rotate -q worker >/dev/null",
    ]
    removals = commands[3:5]
    assert len(removals) == 2 and all(
        c.endswith(("03sjtrjil5vg9iath4imcurlg", "6q6mxl2suqt7mr6qfb7tq79x4")) for c in removals
    )
    # A manager --force-new-cluster dropped from Raft cannot be demoted: the removal's error is the one that counts.
    assert all("docker node demote" in c and ">/dev/null 2>&1; docker node rm --force" in c for c in removals)
    assert {r.node for r in plan.runs} == {"manager-3"}


def test_reform_ends_with_a_fresh_raft_snapshot_and_the_swarms_own_interval_back(inventory: Inventory) -> None:
    survivor = probe("manager-3", snapshot="0000000000000002-0000000000002710.snap")
    assert survivor.info is not None and survivor.info.snapshot_interval == 10000  # the recorded swarm's spec
    snapshot = plan_reform(inventory.node("manager-3"), survivor, inventory.managers).runs[-1]
    assert snapshot.node == "manager-3" and "fresh Raft snapshot" in snapshot.why
    # A write a second at interval 1 until a snapshot newer than the probe's appears, then the interval back.
    assert "before=0000000000000002-0000000000002710.snap;" in snapshot.command
    assert (
        "docker swarm update --snapshot-interval 1 >/dev/null; now=$(ls /var/lib/docker/swarm/raft/snap-v3-encrypted"
        in (snapshot.command)
    )
    assert snapshot.command.index("--snapshot-interval 10000") > snapshot.command.index("done;")
    assert snapshot.command.endswith('[ -n "$now" ] && [ "$now" != "$before" ]')  # fails if none was taken
    tuned = replace(survivor, info=replace(survivor.info, snapshot_interval=2500))
    assert (
        "--snapshot-interval 2500 "
        in plan_reform(inventory.node("manager-3"), tuned, inventory.managers).runs[-1].command
    )


def node_id_of(hostname: str) -> str:
    return next(n.node_id for n in NODES if n.hostname == hostname)


def members_without(*names: str) -> tuple[SwarmNode, ...]:
    return tuple(
        replace(n, reachability="reachable" if n.role == "manager" else "") for n in NODES if n.hostname not in names
    )


def test_a_stale_manager_leaves_and_joins_again_with_the_token_on_stdin(inventory: Inventory) -> None:
    manager, leader = inventory.node("manager-1"), inventory.node("manager-3")
    stale = probe("manager-1", node_id="removed-id")
    plan = plan_rejoin(manager, stale, members_without("manager-1"), leader)
    leave, join, ready = plan.operations
    assert isinstance(leave, Run) and (leave.node, leave.command) == ("manager-1", "docker swarm leave --force")
    assert isinstance(join, Run) and join.stdin == token_secret(TokenRole.MANAGER)
    assert "--token" not in join.command and "--data-binary @-" in join.command and JOIN_CONTINUES in join.command
    assert isinstance(ready, Wait) and ready.node == "manager-3"


def test_an_old_entry_of_a_replaced_manager_is_removed_before_it_joins(inventory: Inventory) -> None:
    manager, leader = inventory.node("manager-2"), inventory.node("manager-1")
    fresh = ManagerProbe("manager-2", True, info=parse_swarm_info('{"LocalNodeState": "inactive"}'))
    old = replace(next(n for n in NODES if n.hostname == "manager-2"), state="down", reachability="unreachable")
    plan = plan_rejoin(manager, fresh, (*members_without("manager-2"), old), leader)
    first = plan.runs[0]
    assert first.node == "manager-1" and first.command.endswith(f"docker node rm --force {old.node_id}")
    assert not any("leave" in r.command for r in plan.runs), "a machine in no swarm has nothing to leave"


def test_a_returning_member_is_only_waited_for_and_a_ready_one_left_alone(inventory: Inventory) -> None:
    manager, leader = inventory.node("manager-2"), inventory.node("manager-1")
    member = probe("manager-2", node_id=node_id_of("manager-2"))
    down = tuple(replace(n, state="down") if n.hostname == "manager-2" else n for n in members_without())
    [wait] = plan_rejoin(manager, member, down, leader).operations
    assert isinstance(wait, Wait) and wait.what == "manager-2 back"
    ready = plan_rejoin(manager, member, members_without(), leader)
    assert not ready.operations and ready.notes == ("manager-2 is a Ready manager",)


def test_manager_ready_verdict_needs_a_reachable_manager() -> None:
    row = {"id": "x", "hostname": "manager-2", "role": "manager", "availability": "active", "state": "ready"}
    verdict = manager_ready_verdict("manager-2")
    assert not verdict(json.dumps(row | {"reachability": "unreachable"})).done
    assert verdict(json.dumps(row | {"reachability": "reachable"})).done
    assert not verdict("").done


def test_a_worker_from_another_swarm_leaves_and_joins_as_a_worker(inventory: Inventory) -> None:
    worker, leader = inventory.node("worker-2"), inventory.node("manager-1")
    stranger = ManagerProbe("worker-2", True, info=replace(parse_swarm_info(MANAGER), node_id="other-swarm-id"))
    plan = plan_rejoin(worker, stranger, members_without(), leader, TokenRole.WORKER)
    commands = [(r.node, r.command) for r in plan.runs]
    assert commands[0][0] == "manager-1" and commands[0][1].endswith(f"docker node rm --force {node_id_of('worker-2')}")
    assert "docker node demote" not in commands[0][1], "a worker entry needs no demotion"
    assert commands[1] == ("worker-2", "docker swarm leave --force")
    assert plan.runs[2].stdin == token_secret(TokenRole.WORKER)
    member = ManagerProbe("worker-2", True, info=replace(parse_swarm_info(MANAGER), node_id=node_id_of("worker-2")))
    assert plan_rejoin(worker, member, members_without(), leader, TokenRole.WORKER).notes == (
        "worker-2 is a Ready worker",
    )
