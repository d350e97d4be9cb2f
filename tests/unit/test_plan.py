"""Plans for init, join and drain: facts recorded from a real lab in, the commands to run out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cluster.facts.swarm import SwarmInfo, SwarmNode, parse_node_list, parse_swarm_info
from cluster.inventory import Inventory, Node
from cluster.operations import Parallel, Wait
from cluster.plans.swarm import PlanError, TokenRole, plan_drain, plan_init, plan_join, token_secret, tokens_needed
from tests.unit.fake_runner import lab_shaped_inventory
from tests.unit.recorded import recorded

POOL = "10.128.0.0/16"


@pytest.fixture
def inventory() -> Inventory:
    return lab_shaped_inventory()


def swarm_info(name: str) -> SwarmInfo:
    return parse_swarm_info(recorded(name))


def fresh(inventory: Inventory) -> dict[str, SwarmInfo]:
    return {n.name: swarm_info("swarm_inactive") for n in inventory.swarm_nodes}


def members() -> tuple[SwarmNode, ...]:
    return parse_node_list(recorded("node_ls"))


def test_parsers_read_recorded_docker_output() -> None:
    manager, worker, inactive = (swarm_info(f) for f in ("swarm_manager", "swarm_worker", "swarm_inactive"))
    assert manager.is_manager and manager.in_swarm and manager.cluster_id
    assert worker.in_swarm and not worker.is_manager and worker.cluster_id == ""
    assert not inactive.in_swarm
    listed = members()
    assert [m.hostname for m in listed if m.leader] == ["manager-1"]
    assert sum(m.is_manager for m in listed) == 3


def test_init_on_a_fresh_cluster_runs_on_the_first_manager_with_its_private_address(inventory: Inventory) -> None:
    leader, plan = plan_init(fresh(inventory), inventory.managers, POOL)
    assert leader == "manager-1"
    step, ingress = plan.runs
    assert step.node == "manager-1"
    assert "--advertise-addr 10.20.0.11" in step.command and f"--default-addr-pool {POOL}" in step.command
    # Host-mode ports only: the routing mesh's network goes before any node joins.
    assert ingress.node == "manager-1" and ingress.command == "echo y | docker network rm ingress >/dev/null"


def test_init_is_empty_when_a_manager_already_runs_the_swarm(inventory: Inventory) -> None:
    infos = fresh(inventory) | {"manager-2": swarm_info("swarm_manager")}
    leader, plan = plan_init(infos, inventory.managers, POOL)
    assert plan.operations == () and leader == "manager-2" and not plan.changes
    assert plan.notes == ("already initialised; manager-2 is a manager of it",)


def test_managers_in_two_different_swarms_are_refused(inventory: Inventory) -> None:
    one = swarm_info("swarm_manager")
    infos = fresh(inventory) | {"manager-1": one, "manager-3": replace(one, cluster_id="other")}
    with pytest.raises(PlanError, match="different swarms"):
        plan_init(infos, inventory.managers, POOL)


def test_join_plan_for_a_fresh_cluster(inventory: Inventory) -> None:
    leader = inventory.node("manager-1")
    plan = plan_join(fresh(inventory), inventory.swarm_nodes, (), leader)
    steps = plan.runs
    manager, worker = token_secret(TokenRole.MANAGER), token_secret(TokenRole.WORKER)
    assert [(s.node, s.stdin) for s in steps] == [
        ("manager-2", manager),
        ("manager-3", manager),
        ("worker-1", worker),
        ("worker-2", worker),
        ("worker-3", worker),
    ]
    # Managers one at a time (Raft membership changes), then the workers at once, then a wait.
    kinds = [type(op).__name__ for op in plan.operations]
    assert kinds == ["Run", "Run", "Parallel", "Wait"]
    assert isinstance(plan.operations[2], Parallel) and len(plan.operations[2].runs) == 3
    assert isinstance(plan.operations[3], Wait) and plan.operations[3].node == "manager-1"
    assert tokens_needed(plan) == {TokenRole.MANAGER, TokenRole.WORKER}
    joined = steps[2].command
    assert '"AdvertiseAddr":"10.20.0.21"' in joined and '"RemoteAddrs":["10.20.0.11:2377"]' in joined
    assert all("--token" not in s.command and "--data-binary @-" in s.command for s in steps), (
        "the token goes on stdin, never the command line"
    )


def member_info(node: Node, listed: tuple[SwarmNode, ...]) -> SwarmInfo:
    row = next(m for m in listed if m.hostname == node.name)
    return SwarmInfo("active", row.node_id, str(node.private_ip), "", row.is_manager, ())


def test_partly_joined_cluster_joins_only_the_rest(inventory: Inventory) -> None:
    listed = tuple(m for m in members() if m.hostname not in ("manager-3", "worker-2"))
    infos = fresh(inventory) | {
        n.name: member_info(n, listed) for n in inventory.swarm_nodes if n.name not in ("manager-3", "worker-2")
    }
    plan = plan_join(infos, inventory.swarm_nodes, listed, inventory.node("manager-1"))
    assert [s.node for s in plan.runs] == ["manager-3", "worker-2"]


def test_fully_joined_cluster_needs_nothing(inventory: Inventory) -> None:
    listed = members()
    infos = {n.name: member_info(n, listed) for n in inventory.swarm_nodes}
    plan = plan_join(infos, inventory.swarm_nodes, listed, inventory.node("manager-1"))
    assert plan.runs == () and not plan.changes
    assert plan.notes == ("every node is already a member with the right role",)


def test_member_with_the_wrong_role_is_promoted_on_the_leader(inventory: Inventory) -> None:
    listed = tuple(replace(m, role="worker", reachability="") if m.hostname == "manager-3" else m for m in members())
    infos = {n.name: member_info(n, listed) for n in inventory.swarm_nodes}
    [step] = plan_join(infos, inventory.swarm_nodes, listed, inventory.node("manager-1")).runs
    assert step.node == "manager-1" and step.command.startswith("docker node promote ")


def test_node_of_another_swarm_is_refused_not_forced(inventory: Inventory) -> None:
    listed = members()
    infos = {n.name: member_info(n, listed) for n in inventory.swarm_nodes}
    infos["worker-3"] = replace(infos["worker-3"], node_id="stranger")
    with pytest.raises(PlanError, match="worker-3 already belong to another swarm"):
        plan_join(infos, inventory.swarm_nodes, listed, inventory.node("manager-1"))


def test_drain_plan_targets_active_managers_only(inventory: Inventory) -> None:
    listed = tuple(
        replace(m, availability="Active") if m.hostname in ("manager-2", "worker-1") else m for m in members()
    )
    plan = plan_drain(listed, inventory.managers, inventory.node("manager-1"))
    [step] = plan.runs
    manager_2 = next(m for m in listed if m.hostname == "manager-2")
    assert step.command == f"docker node update --availability drain {manager_2.node_id}"
    assert isinstance(plan.operations[-1], Wait), "the drain waits until no task runs on a manager"
    drained = plan_drain(members(), inventory.managers, inventory.node("manager-1"))
    assert drained.runs == () and not drained.changes
