"""Day-2 tasks end to end with the fake runner: the facts a manager gives in, the commands run out; dry
runs and bad input change nothing; a swarm without quorum is reported, refused or recovered."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cluster import flows
from cluster.errors import CommandFailed, SwarmlabError
from cluster.facts.managers import Quorum
from cluster.inventory import Node
from cluster.plans import security, services
from cluster.plans.nodes import NodeError
from cluster.plans.recover import RecoverRefused
from cluster.plans.services import ServiceError
from cluster.reads import probe_managers
from cluster.runners import KEY_CHANGED, Result
from cluster.tasks import recover as recover_task
from cluster.tasks.nodes import activate_node, drain_node
from cluster.tasks.security import rotate_ca, rotate_join_tokens
from cluster.tasks.services import rebalance, rollback, scale, update
from cluster.tasks.status import status_report
from tests.unit.fake_runner import FakeRunner
from tests.unit.fake_runner import fake_session as session
from tests.unit.fake_runner import lab_shaped_inventory as inventory
from tests.unit.recorded import recorded

MANAGER = recorded("swarm_manager")
SERVICES = recorded("services")
NODES = recorded("nodes")
NODE_LS = recorded("node_ls")
SWARM_STATE = r"^ids=\$\(docker service ls -q\)"
# Commands that change the swarm: none may run in a dry run or on bad input.
CHANGING = r"service update|service rollback|node update|node rm|swarm init|swarm leave|swarm/join|--rotate"


def probe_output(info: str, leader: bool) -> str:
    raft = "snap=\nwal=0000000000000000-0000000000000000.wal\nwal_mtime=1795621969.1\n"
    return f"{info}\n---\nleader={'yes' if leader else 'no'}\n---\n{raft}"


def healthy_swarm() -> FakeRunner:
    """A manager that answers with the services, tasks and nodes recorded from the lab."""
    runner = FakeRunner(inventory())  # the last answer given wins over earlier ones that also match
    runner.answer(r"docker info --format '\{\{json .Swarm\}\}'", MANAGER)
    runner.answer(r"docker node ls --format", NODE_LS)
    runner.answer(r"^ids=\$\(docker node ls -q\)", NODES)
    runner.answer(r"^ids=registration_", f"{SERVICES}\n---\n{NODES}")
    runner.answer(SWARM_STATE, f"{SERVICES}\n---\n{NODES}")
    return runner


def test_scale_runs_the_update_on_a_manager_and_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = healthy_swarm()
    monkeypatch.setattr(services, "SCALE_TIMEOUT", 1)
    # The recorded facts still show one replica, so the wait cannot succeed: the task times out naming
    # what it waited for and what it saw; the command before it ran exactly once.
    with pytest.raises(SwarmlabError, match=r"registration_otp: 3 replicas running: not reached(.|\n)*1/3 running"):
        scale(session(runner, tmp_path), "otp=3")
    assert runner.commands(CHANGING) == ["docker service update --detach --replicas 3 registration_otp"]


def test_scale_to_the_current_count_says_no_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = healthy_swarm()
    scaled = session(runner, tmp_path)
    scale(scaled, "registration_otp=1")
    assert not runner.commands(CHANGING) and not scaled.timings.changed
    assert "registration_otp already runs 1 replicas" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("ui=-1", "0 or more"), ("nosuch=2", "no service 'nosuch'"), ("ui=6", "at most 3"), ("ui", "SERVICE=N")],
)
def test_bad_scale_requests_change_nothing(tmp_path: Path, spec: str, problem: str) -> None:
    runner = healthy_swarm()
    with pytest.raises(ServiceError, match=problem):
        scale(session(runner, tmp_path), spec)
    assert not runner.commands(CHANGING)


def test_negative_replicas_are_refused_before_any_node_is_asked(tmp_path: Path) -> None:
    runner = healthy_swarm()
    with pytest.raises(ServiceError):
        scale(session(runner, tmp_path), "ui=-3")
    assert runner.calls == []


def test_dry_runs_of_service_and_node_tasks_change_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = healthy_swarm()
    dry = session(runner, tmp_path, dry_run=True)
    scale(dry, "otp=2")
    update(dry, "api", force=True)
    drain_node(dry, "worker-2")
    rotate_join_tokens(dry)
    assert not runner.commands(CHANGING) and not dry.timings.changed and dry.timings.would_change
    out = capsys.readouterr().out
    assert "would change on manager-1: registration_otp scaled from 1 to 2" in out
    assert "would change on manager-1: worker-2 drained" in out


def test_update_of_an_unknown_service_lists_the_services(tmp_path: Path) -> None:
    runner = healthy_swarm()
    with pytest.raises(ServiceError, match="Services: api, email"):
        update(session(runner, tmp_path), "apii", image="x:1")
    assert not runner.commands(CHANGING)


def test_rollback_without_a_previous_spec_is_refused(tmp_path: Path) -> None:
    runner = healthy_swarm()
    with pytest.raises(ServiceError, match="no previous spec"):
        rollback(session(runner, tmp_path), "api")
    assert not runner.commands(CHANGING)


def test_rebalance_of_a_balanced_swarm_changes_nothing(tmp_path: Path) -> None:
    runner = healthy_swarm()
    rebalanced = session(runner, tmp_path)
    rebalance(rebalanced)
    assert not runner.commands(CHANGING) and not rebalanced.timings.changed


def test_unknown_node_is_refused_with_the_inventory_names(tmp_path: Path) -> None:
    runner = healthy_swarm()
    with pytest.raises(NodeError, match="unknown node 'worker-9': the inventory's swarm nodes are manager-1"):
        drain_node(session(runner, tmp_path), "worker-9")
    with pytest.raises(NodeError, match="unknown node 'lb-1'"):
        activate_node(session(runner, tmp_path), "lb-1")
    assert runner.calls == []


def test_token_rotation_never_shows_a_token(tmp_path: Path) -> None:
    runner = healthy_swarm()
    runner.answer(r"join-token --rotate", "SWMTKN-1-new-token-never-seen")
    rotated = session(runner, tmp_path)
    rotate_join_tokens(rotated)
    assert all(">/dev/null" in c for c in runner.commands("--rotate")) and rotated.timings.changed


def test_ca_rotation_waits_until_the_nodes_renewed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = healthy_swarm()
    runner.answer(r"RootRotationInProgress", '"OLD"|false\nmanager-1|Ready|Ready\n')
    runner.answer(r"swarm ca --rotate", "")
    monkeypatch.setattr(security, "CA_TIMEOUT", 1)
    with pytest.raises(SwarmlabError, match="every node renewed its certificate: not reached"):
        rotate_ca(session(runner, tmp_path))  # the fake's root never changes
    assert runner.commands("swarm ca") == ["docker swarm ca --rotate --detach --quiet >/dev/null"]


# --- quorum -----------------------------------------------------------------------------------------------------


def lost_quorum() -> FakeRunner:
    """manager-1 and manager-2 do not answer; manager-3 answers but sees no leader."""
    runner = healthy_swarm()
    info = json.loads(MANAGER)
    survivor = info | {"NodeID": "nh4ybhmyu5socep2xf33si6g4", "NodeAddr": "10.20.0.13"}
    runner.answer(r"leader=yes", "ssh: connect failed", exit_code=255, node="manager-[12]")
    runner.answer(r"leader=yes", probe_output(json.dumps(survivor), leader=False), node="manager-3")
    return runner


def test_status_without_quorum_names_who_answers_and_the_fix(tmp_path: Path) -> None:
    report = status_report(lost_quorum())
    assert "QUORUM LOST: 1 of 3 managers answer; Raft needs 2." in report
    assert "manager-1  10.20.0.11  no       exit 255" in report
    assert "`fab recover` re-forms the swarm from manager-3" in report


def test_a_manager_whose_host_key_changed_stops_status_and_recover(tmp_path: Path) -> None:
    runner = lost_quorum()
    original = runner.run

    def run(node: Node, command: str, **kwargs: Any) -> Result:
        if node.name == "manager-1":
            raise CommandFailed(node.name, command, None, "Host key for server does not match", KEY_CHANGED)
        return original(node, command, **kwargs)

    runner.run = run  # type: ignore[method-assign]
    with pytest.raises(SwarmlabError, match="host key is not the pinned one"):
        status_report(runner)
    with pytest.raises(SwarmlabError, match="host key is not the pinned one"):
        flows.run(flows.RECOVER, session(runner, tmp_path))
    assert not runner.commands(CHANGING), "never re-form a swarm around a node that may be an impostor"


def test_status_with_quorum_lists_tasks_that_do_not_run(tmp_path: Path) -> None:
    runner = healthy_swarm()
    runner.answer(r"leader=yes", probe_output(MANAGER, leader=True))
    runner.answer(r"docker service ls --format", "registration_ui|replicated|2/3 (max 1 per node)|ui:1\n")
    pending = SERVICES.replace('"desired":"running","state":"running"', '"desired":"running","state":"pending"', 1)
    runner.answer(SWARM_STATE, f"{pending}\n---\n{NODES}")
    report = status_report(runner)
    assert "quorum: 3 of 3 managers answer; Raft needs 2" in report
    assert "NOT RUNNING" in report and "pending" in report


def test_recover_refuses_while_the_swarm_has_quorum(tmp_path: Path) -> None:
    runner = healthy_swarm()
    runner.answer(r"leader=yes", probe_output(MANAGER, leader=True))
    nodes = "\n".join(
        json.dumps(json.loads(line) | {"reachability": "reachable"}) for line in NODES.splitlines() if line.strip()
    )
    runner.answer(r"^ids=\$\(docker node ls -q\)", nodes)
    with pytest.raises(RecoverRefused, match=r"the swarm has quorum \(3 of 3 managers answer"):
        flows.run(flows.RECOVER, session(runner, tmp_path))
    assert not runner.commands(CHANGING)


def test_recover_reforms_on_the_survivor_and_reports_managers_it_cannot_bring_back(tmp_path: Path) -> None:
    runner = lost_quorum()
    with pytest.raises(SwarmlabError, match=r"manager-1: exit 255.*\n- manager-2: exit 255"):
        flows.run(flows.RECOVER, session(runner, tmp_path))
    changed = runner.commands(CHANGING)
    assert changed[0] == (
        "docker swarm init --force-new-cluster --advertise-addr 10.20.0.13 --listen-addr 10.20.0.13:2377"
    )
    removed = [c for c in changed if "node rm --force" in c]
    assert len(removed) == 2 and all("nh4ybhmyu5" not in c for c in removed)
    assert not runner.commands("swarm/join"), "a static provider cannot bring machines back: nothing joins"


def stale_leader_first(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """manager-3 still "sees" the leader it lost for the first `times` probes (Raft's election timeout)."""
    seen = {"probes": 0}

    def probe(runner: FakeRunner) -> Quorum:
        quorum = probe_managers(runner)
        seen["probes"] += 1
        if seen["probes"] > times:
            # Raft settled: the manager's node list answers "no leader" no more (it is the survivor now).
            runner.answers = [a for a in runner.answers if "deadline exceeded" not in a[2]]
            return quorum
        return Quorum(tuple(replace(p, sees_leader=p.name == "manager-3") for p in quorum.probes))

    monkeypatch.setattr(recover_task, "probe_managers", probe)
    monkeypatch.setattr(recover_task, "QUORUM_RETRY", 0.0)


def test_recover_asks_again_while_a_minority_still_sees_the_leader_it_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = lost_quorum()
    runner.answer(r"^ids=\$\(docker node ls -q\)", "rpc error: context deadline exceeded", exit_code=1)
    stale_leader_first(monkeypatch, times=2)
    with pytest.raises(SwarmlabError, match="some managers are not back"):
        flows.run(flows.RECOVER, session(runner, tmp_path))
    assert "asking again while Raft settles" in capsys.readouterr().out
    assert runner.commands(CHANGING)[0].startswith("docker swarm init --force-new-cluster --advertise-addr 10.20.0.13")


def test_a_leader_seen_past_the_settling_time_is_real_quorum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = lost_quorum()
    runner.answer(r"^ids=\$\(docker node ls -q\)", NODES)
    stale_leader_first(monkeypatch, times=1000)
    monkeypatch.setattr(recover_task, "QUORUM_SETTLE", 0.0)
    with pytest.raises(RecoverRefused, match="has quorum"):
        flows.run(flows.RECOVER, session(runner, tmp_path))
    assert not runner.commands("force-new-cluster"), "managers out of our reach but in the swarm: no new cluster"


def test_recover_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = lost_quorum()
    flows.run(flows.RECOVER, session(runner, tmp_path, dry_run=True))
    assert not runner.commands(CHANGING)
    out = capsys.readouterr().out
    assert "would change on manager-3: swarm re-formed on manager-3" in out
    assert "would bring back manager-1" in out
