"""Day-2 planners: facts recorded from a real lab (tests/unit/facts/services.json, nodes.json) in, the
operations out; the verdicts of their waits on outputs in the shape the swarm gives."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cluster.facts.services import Service, SwarmState, Task, parse_services_and_tasks
from cluster.facts.swarm import SwarmNode, parse_ca, parse_nodes
from cluster.operations import Run, Wait
from cluster.plans.nodes import NodeError, placed_verdict, plan_activate_node, plan_drain_node
from cluster.plans.security import ca_verdict, plan_rotate_ca, plan_rotate_tokens
from cluster.plans.services import (
    ServiceError,
    capacity,
    excess,
    parse_scale,
    plan_rebalance,
    plan_rollback,
    plan_scale,
    plan_update,
    resolve_service,
    same_image,
    spread,
    uneven,
    update_verdict,
)
from tests.unit.recorded import recorded

LEADER = "manager-1"


def recorded_state() -> SwarmState:
    state = parse_services_and_tasks(recorded("services"))
    return replace(state, nodes=parse_nodes(recorded("nodes")))


def service(state: SwarmState, short: str) -> Service:
    return resolve_service(state.services, short, "registration")


def node_id(state: SwarmState, hostname: str) -> str:
    return next(n.node_id for n in state.nodes if n.hostname == hostname)


def with_tasks(state: SwarmState, svc: Service, hosts: list[str], image: str = "") -> SwarmState:
    """The state with `svc` running one task on each of `hosts` (repeats allowed)."""
    others = tuple(t for t in state.tasks if t.service_id != svc.service_id)
    tasks = tuple(
        Task(f"t{i}", svc.service_id, node_id(state, host), i + 1, "running", "running", image=image or svc.image)
        for i, host in enumerate(hosts)
    )
    services = tuple(replace(s, replicas=len(hosts)) if s.service_id == svc.service_id else s for s in state.services)
    return replace(state, services=services, tasks=others + tasks)


def status_output(svc: Service, tasks: list[dict[str, object]], nodes: tuple[SwarmNode, ...] = ()) -> str:
    """What `service_status` prints: the service, ---, its tasks, ---, the nodes."""
    row = {
        "id": svc.service_id,
        "name": svc.name,
        "labels": {"com.docker.stack.namespace": svc.stack},
        "mode": {"Replicated": {"Replicas": svc.replicas}},
        "image": svc.image,
        "placement": {"Constraints": list(svc.constraints), "MaxReplicas": svc.max_per_node},
        "update_config": {"Order": svc.update_order},
        "update_status": {"State": svc.update_state, "StartedAt": svc.update_started, "Message": svc.update_message}
        if svc.update_state
        else None,
        "previous": svc.has_previous,
    }
    node_rows = [
        {"id": n.node_id, "hostname": n.hostname, "role": n.role, "availability": n.availability, "state": n.state}
        for n in nodes
    ]
    return "\n".join(
        [json.dumps(row), "---", *(json.dumps(t) for t in tasks), "---", *(json.dumps(n) for n in node_rows)]
    )


def task_row(svc: Service, node: str, state: str = "running", error: str = "", image: str = "") -> dict[str, object]:
    return {
        "id": f"task-{node}-{state}",
        "service": svc.service_id,
        "node": node,
        "slot": 1,
        "desired": "running" if state in ("running", "starting") else "shutdown",
        "state": state,
        "error": error,
        "image": image or svc.image,
        "timestamp": "2026-11-25T16:00:00Z",
    }


# --- facts ------------------------------------------------------------------------------------------


def test_recorded_services_tasks_and_nodes_parse() -> None:
    state = recorded_state()
    assert len(state.services) == 12 and len(state.nodes) == 6
    ui = service(state, "ui")
    assert (ui.name, ui.replicas, ui.max_per_node, ui.constraints) == (
        "registration_ui",
        3,
        1,
        ("node.role == worker",),
    )
    assert ui.update_order == "stop-first" and service(state, "otp").update_order == "start-first"
    assert {state.hostname(t.node_id) for t in state.tasks_of(ui) if t.running} == {"worker-1", "worker-2", "worker-3"}
    managers = [n for n in state.nodes if n.role == "manager"]
    assert [n.hostname for n in managers if n.leader] == ["manager-1"] and all(not n.schedulable for n in managers)


def test_service_by_short_or_full_name_and_unknown_lists_them() -> None:
    state = recorded_state()
    assert service(state, "ui") is resolve_service(state.services, "registration_ui", "other")
    with pytest.raises(ServiceError, match=r"no service 'uix'.*Services: api, email, .*, ui$"):
        service(state, "uix")


def test_images_compare_without_the_pinned_digest() -> None:
    assert same_image("r:5000/a:1@sha256:abc", "r:5000/a:1")
    assert not same_image("r:5000/a:1@sha256:abc", "r:5000/a:2")
    assert same_image("r:5000/a:1@sha256:abc", "r:5000/a:1@sha256:abc")


# --- scale ------------------------------------------------------------------------------------------


def test_scale_sets_replicas_then_waits_for_them() -> None:
    state = recorded_state()
    otp = service(state, "otp")
    plan = plan_scale(LEADER, otp, 3, state.nodes, 1)
    run, wait = plan.operations
    assert isinstance(run, Run) and run.command == "docker service update --detach --replicas 3 registration_otp"
    assert isinstance(wait, Wait) and wait.node == LEADER and plan.changes


def test_scale_to_the_current_count_changes_nothing() -> None:
    state = recorded_state()
    plan = plan_scale(LEADER, service(state, "otp"), 1, state.nodes, 1)
    assert not plan.operations and plan.notes == ("registration_otp already runs 1 replicas",)


def test_scale_beyond_one_per_node_is_refused_with_the_limit() -> None:
    state = recorded_state()
    assert capacity(service(state, "ui"), state.nodes) == 3
    with pytest.raises(ServiceError, match=r"cannot run 6 replicas: it allows 1 per node .* 3 nodes are eligible"):
        plan_scale(LEADER, service(state, "ui"), 6, state.nodes, 3)
    drained = tuple(replace(n, availability="drain") if n.hostname == "worker-3" else n for n in state.nodes)
    with pytest.raises(ServiceError, match=r"so at most 2"):
        plan_scale(LEADER, service(state, "api"), 3, drained, 3)


def test_scale_of_a_global_service_or_below_zero_is_refused() -> None:
    state = recorded_state()
    with pytest.raises(ServiceError, match="global service"):
        plan_scale(LEADER, replace(service(state, "otp"), mode="global"), 2, state.nodes, 3)
    with pytest.raises(ServiceError, match="0 or more"):
        plan_scale(LEADER, service(state, "otp"), -1, state.nodes, 1)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("ui", "write SERVICE=N"), ("=3", "write SERVICE=N"), ("ui=x", "whole number"), ("ui=-1", "0 or more")],
)
def test_bad_scale_specs_are_refused(spec: str, problem: str) -> None:
    with pytest.raises(ServiceError, match=problem):
        parse_scale(spec)
    assert parse_scale(" ui = 2") == ("ui", 2)


# --- update and rollback -------------------------------------------------------------------------------


def test_update_runs_detached_then_waits_for_completion() -> None:
    api = service(recorded_state(), "api")
    plan = plan_update(LEADER, api, "r:5000/swarmlab/api:new", force=False)
    run, wait = plan.operations
    assert isinstance(run, Run) and run.command == (
        "docker service update --detach --image r:5000/swarmlab/api:new registration_api"
    )
    assert isinstance(wait, Wait) and "stop-first" in wait.what
    forced = plan_update(LEADER, api, "", force=True).runs[0].command
    assert forced == "docker service update --detach --force registration_api"


def test_update_to_the_running_image_changes_nothing_and_no_request_is_refused() -> None:
    api = service(recorded_state(), "api")
    assert not plan_update(LEADER, api, api.image.split("@")[0], force=False).operations
    with pytest.raises(ServiceError, match="give --image REF, or --force"):
        plan_update(LEADER, api, "", force=False)


def test_update_verdict_waits_for_a_new_update_then_reports_a_rollback_with_task_and_node() -> None:
    state = recorded_state()
    api = replace(service(state, "api"), update_state="completed", update_started="T0")
    verdict = update_verdict(api.name, "T0", "r/api:new")
    nodes = state.nodes
    worker = node_id(state, "worker-2")
    assert not verdict(status_output(api, [task_row(api, worker)], nodes)).done  # the old update: not started yet
    rolling_back = replace(api, update_state="rollback_started", update_started="T1")
    failed = task_row(api, worker, "rejected", "No such image: r/api:new", "r/api:new")
    seen = verdict(status_output(rolling_back, [failed], nodes))
    assert not seen.done and not seen.failed and "rolling it back" in seen.detail
    rolled = replace(api, update_state="rollback_completed", update_started="T1", update_message="update rolled back")
    final = verdict(status_output(rolled, [failed, task_row(api, worker)], nodes))
    assert final.failed and "Swarm rolled it back" in final.detail
    assert "on worker-2: rejected: No such image: r/api:new" in final.detail


def test_update_verdict_is_done_when_every_replica_runs_the_new_spec() -> None:
    state = recorded_state()
    api = replace(service(state, "api"), update_state="completed", update_started="T1", image="r/api:new@sha256:1")
    rows = [task_row(api, node_id(state, f"worker-{i}")) for i in (1, 2, 3)]
    assert update_verdict(api.name, "T0", "r/api:new")(status_output(api, rows, state.nodes)).done
    old = [*rows[:2], task_row(api, node_id(state, "worker-3"), image="r/api:old@sha256:0")]
    assert not update_verdict(api.name, "T0", "r/api:new")(status_output(api, old, state.nodes)).done


def test_rollback_goes_to_the_previous_spec_once() -> None:
    api = replace(service(recorded_state(), "api"), has_previous=True, update_state="completed")
    run, wait = plan_rollback(LEADER, api).operations
    assert isinstance(run, Run) and run.command == "docker service rollback --detach registration_api"
    assert isinstance(wait, Wait)
    rolled = replace(api, update_state="rollback_completed", update_message="manually requested rollback")
    plan = plan_rollback(LEADER, rolled)
    assert not plan.operations and "already rolled back" in plan.notes[0]
    with pytest.raises(ServiceError, match="no previous spec"):
        plan_rollback(LEADER, replace(api, has_previous=False))


# --- rebalance ------------------------------------------------------------------------------------------


def test_balanced_services_need_no_rebalance() -> None:
    state = recorded_state()
    plan = plan_rebalance(LEADER, state)
    assert not plan.operations and plan.notes == ("every service's tasks are evenly spread over their eligible nodes",)


def test_an_uneven_start_first_service_goes_up_then_back_down() -> None:
    state = recorded_state()
    uneven_state = with_tasks(state, service(state, "student"), ["worker-1", "worker-1", "worker-2"])
    student = service(uneven_state, "student")
    counts = spread(uneven_state, student)
    assert counts == {"worker-1": 2, "worker-2": 1, "worker-3": 0} and uneven(counts) and excess(counts, 3) == 1
    plan = plan_rebalance(LEADER, uneven_state)
    assert [r.command for r in plan.runs] == [
        "docker service update --detach --replicas 4 registration_student",
        "docker service update --detach --replicas 3 registration_student",
    ]
    assert [type(op).__name__ for op in plan.operations] == ["Run", "Wait", "Run", "Wait"]


def test_an_uneven_stop_first_service_goes_down_then_back_up() -> None:
    state = recorded_state()
    single = replace(service(state, "student"), update_order="stop-first")
    state = replace(state, services=tuple(single if s.name == single.name else s for s in state.services))
    uneven_state = with_tasks(state, single, ["worker-1"] * 4)
    assert [r.command.split()[-2] for r in plan_rebalance(LEADER, uneven_state).runs] == ["2", "4"]


# --- nodes --------------------------------------------------------------------------------------------------


def test_drain_node_waits_for_its_tasks_to_move_and_says_what_runs_short() -> None:
    state = recorded_state()
    plan = plan_drain_node(LEADER, "worker-3", state)
    run, empty, placed = plan.operations
    assert (
        isinstance(run, Run) and run.command == f"docker node update --availability drain {node_id(state, 'worker-3')}"
    )
    assert isinstance(empty, Wait) and isinstance(placed, Wait)
    assert "registration_ui will run 2 of 3 replicas while worker-3 is drained" in plan.notes
    # Told to stop is not stopped: an API task finishing its requests (up to its stop_grace_period) still
    # runs, and stopping the node's engine then would cut them. Only stopped tasks count as gone.
    stopping = "worker-3|registration_api.2|Running 4 seconds ago\nworker-3|registration_api.2|Shutdown 3 minutes ago\n"
    seen = empty.verdict(stopping)
    assert not seen.done and "registration_api.2" in seen.detail
    assert empty.verdict(stopping.replace("Running 4", "Shutdown 1")).done
    assert empty.verdict("worker-3|registration_otp.1|Starting 1 second ago\n").done is False


def test_drain_node_does_not_wait_for_the_tasks_of_a_node_that_is_down() -> None:
    state = recorded_state()
    down = replace(state, nodes=tuple(replace(n, state="down") if n.hostname == "worker-3" else n for n in state.nodes))
    plan = plan_drain_node(LEADER, "worker-3", down)
    assert [type(op) for op in plan.operations] == [Run, Wait]  # the drain, then the services placed elsewhere
    assert "worker-3 is down: its tasks are not waited for" in plan.notes


def test_drain_node_says_a_global_service_runs_on_fewer_nodes_not_of_a_count() -> None:
    state = recorded_state()
    anchor = replace(service(state, "otp"), mode="global", replicas=0, constraints=("node.role==worker",))
    state = replace(state, services=tuple(anchor if s.name == anchor.name else s for s in state.services))
    notes = plan_drain_node(LEADER, "worker-3", state).notes
    assert f"{anchor.name} (global) will run on 2 of 3 nodes while worker-3 is drained" in notes
    assert not any(n.startswith(f"{anchor.name} will run") for n in notes)


def test_drain_node_refuses_to_strand_a_service_and_is_idempotent() -> None:
    state = recorded_state()
    nodes = tuple(
        replace(n, availability="drain") if n.hostname in ("worker-1", "worker-2") else n for n in state.nodes
    )
    with pytest.raises(NodeError, match="would leave no node for registration_api"):
        plan_drain_node(LEADER, "worker-3", replace(state, nodes=nodes))
    assert not plan_drain_node(LEADER, "manager-2", state).operations
    with pytest.raises(NodeError, match="not a member"):
        plan_drain_node(LEADER, "worker-9", state)


def test_activate_node_refuses_managers_and_says_to_rebalance() -> None:
    state = recorded_state()
    with pytest.raises(NodeError, match="managers stay drained"):
        plan_activate_node(LEADER, "manager-2", state)
    assert not plan_activate_node(LEADER, "worker-1", state).operations
    drained = replace(
        state, nodes=tuple(replace(n, availability="drain") if n.hostname == "worker-1" else n for n in state.nodes)
    )
    plan = plan_activate_node(LEADER, "worker-1", drained)
    assert plan.runs[0].command.startswith("docker node update --availability active ")
    assert "fab rebalance" in plan.notes[0]


def test_placed_verdict_names_the_services_still_short() -> None:
    state = recorded_state()
    ui = service(state, "ui")
    output = status_output(
        ui, [task_row(ui, node_id(state, "worker-1")), task_row(ui, "x", "pending", "no suitable node")]
    )
    seen = placed_verdict({ui.name: 2})(output)
    assert not seen.done and "registration_ui: 1/2" in seen.detail and "no suitable node" in seen.detail
    assert placed_verdict({ui.name: 1})(output).done


# --- security -----------------------------------------------------------------------------------------------


def test_token_rotation_prints_no_token() -> None:
    plan = plan_rotate_tokens(LEADER)
    assert [r.command for r in plan.runs] == [
        "docker swarm join-token --rotate -q manager >/dev/null",
        "docker swarm join-token --rotate -q worker >/dev/null",
    ]


def test_ca_rotation_waits_for_a_new_root_and_every_ready_node() -> None:
    before = parse_ca('"OLD"|false\nmanager-1|Ready|Ready\nworker-1|Down|Unknown\n')
    assert before.issuer_key == "OLD" and not before.rotating
    plan = plan_rotate_ca(LEADER, before)
    assert plan.runs[0].command == "docker swarm ca --rotate --detach --quiet >/dev/null"
    assert any("worker-1" in note for note in plan.notes)
    verdict = ca_verdict("OLD")
    assert not verdict('"NEW"|true\nmanager-1|Ready|Rotating\n').done
    assert not verdict('"NEW"|false\nmanager-1|Ready|Rotating\n').done
    assert verdict('"NEW"|false\nmanager-1|Ready|Ready\nworker-1|Down|Unknown\n').done
    rotating = plan_rotate_ca(LEADER, replace(before, rotating=True))
    assert not rotating.runs and "already in progress" in rotating.notes[0]
