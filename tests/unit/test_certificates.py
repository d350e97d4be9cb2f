"""Swarm certificates at a glance and an expired node brought back: the certificate facts (recorded in
tests/unit/facts/node_certificate*.json and root_ca.json), status's lines and WARNs, the recover plan
for a node whose certificate expired, and `fab recover` end to end with the fake runner."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cluster import flows
from cluster.errors import SwarmlabError
from cluster.facts.certificates import NODE_CERTIFICATE, ROOT_CA, Certificate, NodeCertificate, parse_certificate
from cluster.facts.managers import ManagerProbe
from cluster.facts.swarm import parse_nodes, parse_swarm_info
from cluster.inventory import Node
from cluster.operations import Run, Wait
from cluster.plans.recover import RecoverRefused, Rejoined, expired_nodes, plan_rejoin
from cluster.plans.swarm import TokenRole, token_secret
from cluster.runners import Result
from cluster.tasks import recover as recover_task
from cluster.tasks.status import certificates_report, status_report
from tests.unit.fake_runner import FakeRunner, lab_shaped_inventory
from tests.unit.fake_runner import fake_session as session
from tests.unit.recorded import recorded
from tests.unit.test_day2_tasks import CHANGING, MANAGER, NODES, healthy_swarm, probe_output

NOW = datetime(2026, 12, 6, 11, 0, tzinfo=UTC)
VALID = recorded("node_certificate")  # worker-2's, until 2027-02-21 13:25 UTC
EXPIRED = recorded("node_certificate_expired")  # worker-2's, expired 2026-10-30 10:00 UTC
ROOT = recorded("root_ca")  # until 2046-11-18 12:25 UTC


def certificate(output: str) -> Certificate:
    found = parse_certificate(output)
    assert found is not None
    return found


# --- the facts ---------------------------------------------------------------------------------------


def test_a_node_certificate_says_whose_it_is_and_when_it_expires() -> None:
    found = certificate(VALID)
    assert (found.common_name, found.unit) == ("y209buswkhsnde0ya3qc31se9", "swarm-worker")
    assert found.days_left(NOW) == 77 and not found.expired(NOW)
    assert certificate(EXPIRED).expired(NOW) and certificate(EXPIRED).days_left(NOW) == -38


def test_the_node_certificate_is_the_first_of_its_file_and_none_without_a_swarm() -> None:
    # During a root rotation the file holds the node's certificate, then the cross-signed intermediate.
    assert certificate(VALID + ROOT) == certificate(VALID)
    assert parse_certificate("") is None and parse_certificate("\n") is None
    with pytest.raises(ValueError, match="not a PEM certificate"):
        parse_certificate("cat: swarm-node.crt: Permission denied\n")
    assert NODE_CERTIFICATE.command.startswith("test ! -e /var/lib/docker/swarm/certificates/swarm-node.crt ||")
    assert ROOT_CA.command == "docker swarm ca"


# --- status --------------------------------------------------------------------------------------------


def named(name: str, output: str) -> NodeCertificate:
    return NodeCertificate(name, parse_certificate(output))


def test_status_lists_each_certificate_with_its_date_and_days_left_and_no_warning_when_far() -> None:
    lines = certificates_report([named("manager-1", VALID), named("worker-2", VALID)], certificate(ROOT), NOW)
    report = "\n".join(lines)
    assert "CERTIFICATE  EXPIRES               DAYS LEFT" in report
    assert "manager-1    2027-02-21 13:25 UTC  77" in report
    assert "root CA      2046-11-18 12:25 UTC  7287" in report
    assert "WARN" not in report


def test_status_warns_under_30_days_and_for_an_expired_node_or_root() -> None:
    soon = NOW + timedelta(days=60)  # 17 days before the valid certificate expires
    lines = certificates_report([named("manager-1", VALID), named("worker-2", EXPIRED)], certificate(ROOT), soon)
    warnings = [line for line in lines if line.startswith("WARN:")]
    assert warnings == [
        "WARN: manager-1's swarm certificate expires in 17 days (2027-02-21 13:25 UTC). Swarm renews it only while "
        "the node is up and reaches a manager: keep manager-1 up (`fab rotate-ca` renews every node's certificate now)",
        "WARN: worker-2's swarm certificate expired 97 days ago (2026-10-30 10:00 UTC): it cannot rejoin the swarm "
        "by itself. Fix: `fab recover` makes it leave the swarm and join again",
    ]
    assert "worker-2     2026-10-30 10:00 UTC  expired" in lines[0]
    # 29 days and 23 hours is under 30 days; the root CA too.
    root = replace(certificate(ROOT), not_after=NOW + timedelta(days=30) - timedelta(hours=1))
    [warning] = certificates_report([], root, NOW)[1:]
    assert (
        warning.startswith("WARN: the swarm's root CA expires in 29 days") and "`fab rotate-ca` before then" in warning
    )
    assert certificates_report([], replace(root, not_after=NOW + timedelta(days=30)), NOW)[1:] == []


def test_status_shows_a_node_it_could_not_read_and_a_root_it_could_not_ask() -> None:
    lines = certificates_report([NodeCertificate("worker-3", problem="unreachable over SSH: timed out")], None, NOW)
    assert "worker-3     -        unreachable over SSH: timed out" in lines[0]
    assert "root CA      -        not read: no leader to ask" in lines[0]
    assert "no certificate: in no swarm" in certificates_report([NodeCertificate("worker-1")], None, NOW)[0]


def certificates_everywhere(runner: FakeRunner, expired_on: str = "worker-2") -> FakeRunner:
    runner.answer(r"swarm-node\.crt", VALID)
    runner.answer(r"swarm-node\.crt", EXPIRED, node=expired_on)
    runner.answer(r"^docker swarm ca$", ROOT)
    return runner


def test_status_reads_every_node_and_the_root_ca_from_the_leader() -> None:
    runner = certificates_everywhere(healthy_swarm())
    runner.answer(r"leader=yes", probe_output(MANAGER, leader=True))
    report = status_report(runner, NOW)
    asked = {c.node for c in runner.calls if "swarm-node.crt" in c.command}
    assert asked == {"manager-1", "manager-2", "manager-3", "worker-1", "worker-2", "worker-3"}
    assert [c.node for c in runner.calls if c.command == "docker swarm ca"] == ["manager-1"]
    assert "worker-1     2027-02-21 13:25 UTC  77" in report
    assert "WARN: worker-2's swarm certificate expired 37 days ago" in report


def test_status_without_quorum_still_shows_the_node_certificates() -> None:
    from tests.unit.test_day2_tasks import lost_quorum

    runner = certificates_everywhere(lost_quorum(), expired_on="manager-3")
    report = status_report(runner, NOW)
    assert "QUORUM LOST" in report and "WARN: manager-3's swarm certificate expired" in report
    assert "root CA      -                     not read: no leader to ask" in report
    assert "docker swarm ca" not in runner.commands()


# --- recover: the plan -----------------------------------------------------------------------------------

LISTED = tuple(replace(n, reachability="reachable" if n.role == "manager" else "") for n in parse_nodes(NODES))
WORKER_2 = next(n for n in LISTED if n.hostname == "worker-2")


def worker_2_probe(state: str = "active") -> ManagerProbe:
    """worker-2 answering as the recorded engine does, by its own node ID."""
    info = replace(parse_swarm_info(MANAGER), node_id=WORKER_2.node_id, state=state, is_manager=False)
    return ManagerProbe("worker-2", True, info=info)


def test_expired_nodes_are_those_whose_certificate_expired() -> None:
    read = [named("worker-1", VALID), named("worker-2", EXPIRED), NodeCertificate("worker-3", problem="silent")]
    assert expired_nodes(read, NOW) == ("worker-2",)


@pytest.mark.parametrize("engine", ["error", "pending", "active"])
def test_a_node_whose_certificate_expired_leaves_and_joins_again(engine: str) -> None:
    """Whatever its engine says of its swarm state: a node off past its expiry is never waited for."""
    inventory = lab_shaped_inventory()
    leader, worker = inventory.node("manager-1"), inventory.node("worker-2")
    expired = "worker-2" in expired_nodes([named("worker-2", EXPIRED)], NOW)
    # Still listed (down: its engine can no longer talk to the managers), as the swarm shows it.
    listed = tuple(replace(n, state="down") if n.hostname == "worker-2" else n for n in LISTED)
    plan = plan_rejoin(worker, worker_2_probe(engine), listed, leader, TokenRole.WORKER, expired=expired)
    remove, leave, join, ready = plan.operations
    assert isinstance(remove, Run) and remove.node == "manager-1"
    assert remove.command == f"docker node rm --force {WORKER_2.node_id}"
    assert isinstance(leave, Run) and (leave.node, leave.command) == ("worker-2", "docker swarm leave --force")
    assert leave.why == "worker-2 left the swarm (its certificate expired)"
    assert isinstance(join, Run) and join.node == "worker-2" and join.stdin == token_secret(TokenRole.WORKER)
    assert "/swarm/join" in join.command and "10.20.0.11:2377" in join.command
    assert isinstance(ready, Wait) and (ready.node, ready.what) == ("manager-1", "worker-2 Ready")


def test_a_node_whose_certificate_holds_is_left_alone() -> None:
    inventory = lab_shaped_inventory()
    leader, worker = inventory.node("manager-1"), inventory.node("worker-2")
    expired = "worker-2" in expired_nodes([named("worker-2", VALID)], NOW)
    plan = plan_rejoin(worker, worker_2_probe(), LISTED, leader, TokenRole.WORKER, expired=expired)
    assert not plan.operations and plan.notes == ("worker-2 is a Ready worker",)


def test_an_expired_node_that_already_left_only_joins() -> None:
    inventory = lab_shaped_inventory()
    leader, worker = inventory.node("manager-1"), inventory.node("worker-2")
    others = tuple(n for n in LISTED if n.hostname != "worker-2")
    plan = plan_rejoin(worker, worker_2_probe("inactive"), others, leader, TokenRole.WORKER, expired=True)
    assert [r.node for r in plan.runs] == ["worker-2"] and "swarm/join" in plan.runs[0].command


# --- recover: end to end --------------------------------------------------------------------------------


def swarm_with_quorum() -> FakeRunner:
    """Every node answers its probe as the member the node list shows (its own node ID), managers reachable."""
    runner = healthy_swarm()
    for node in LISTED:
        info = json.loads(MANAGER) | {"NodeID": node.node_id, "ControlAvailable": node.is_manager}
        runner.answer(r"leader=yes", probe_output(json.dumps(info), leader=node.is_manager), node=node.hostname)
    nodes = "\n".join(json.dumps(row | {"reachability": "reachable"}) for row in map(json.loads, NODES.splitlines()))
    runner.answer(r"^ids=\$\(docker node ls -q\)", nodes)
    runner.answer(r"^docker swarm join-token -q worker$", "SWMTKN-worker-never-shown\n")
    return runner


@pytest.fixture(autouse=True)
def now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recover_task, "utc_now", lambda: NOW)


def down_until_it_joins(runner: FakeRunner, name: str) -> FakeRunner:
    """The node list shows `name` down (its expired certificate keeps it from the managers) until it joins."""
    rows = [json.loads(line) | {"reachability": "reachable"} for line in NODES.splitlines()]
    down = [row | {"state": "down"} if row["hostname"] == name else row for row in rows]
    runner.answer(r"^ids=\$\(docker node ls -q\)", "\n".join(map(json.dumps, down)))
    original = runner.run

    def run(node: Node, command: str, **kwargs: Any) -> Result:
        if node.name == name and "swarm/join" in command:
            runner.answer(r"^ids=\$\(docker node ls -q\)", "\n".join(map(json.dumps, rows)))
        return original(node, command, **kwargs)

    runner.run = run  # type: ignore[method-assign]
    return runner


def test_recover_brings_back_a_worker_whose_certificate_expired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = down_until_it_joins(certificates_everywhere(swarm_with_quorum()), "worker-2")
    flows.run(flows.RECOVER, session(runner, tmp_path))
    assert "changed: old entry of worker-2 removed (down)" in capsys.readouterr().out
    changed = [(c.node, c.command) for c in runner.calls if any(w in c.command for w in ("node rm", "swarm "))]
    changing = [(node, command) for node, command in changed if "join-token" not in command]
    assert changing[0] == ("manager-1", f"docker node rm --force {WORKER_2.node_id}")
    assert changing[1] == ("worker-2", "docker swarm leave --force")
    assert changing[2][0] == "worker-2" and "/swarm/join" in changing[2][1]
    assert len(changing) == 3, "only worker-2 leaves and joins: the nodes whose certificate holds are left alone"
    join = next(c for c in runner.calls if c.node == "worker-2" and "swarm/join" in c.command)
    assert join.stdin == "SWMTKN-worker-never-shown" and "SWMTKN" not in join.command


def test_recover_with_quorum_and_every_certificate_valid_is_refused(tmp_path: Path) -> None:
    runner = certificates_everywhere(swarm_with_quorum(), expired_on="nobody")
    with pytest.raises(RecoverRefused, match="no node's swarm certificate has expired: nothing to recover"):
        flows.run(flows.RECOVER, session(runner, tmp_path))
    assert not runner.commands(CHANGING)


def test_recover_dry_run_names_the_expired_worker_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = certificates_everywhere(swarm_with_quorum())
    flows.run(flows.RECOVER, session(runner, tmp_path, dry_run=True))
    assert not runner.commands(CHANGING)
    assert "would bring back worker-2: its certificate expired; leave, join as worker" in capsys.readouterr().out


def test_nodes_brought_back_in_two_phases_are_reported_together() -> None:
    managers = Rejoined(["", "manager-2: unreachable"], ["manager-2"], "some managers are not back")
    workers = Rejoined(["worker-2: still does not answer"], [], "some workers whose certificate expired are not back")
    both = managers.then(workers)
    assert both.restored == ["manager-2"] and managers.then(None) is managers
    with pytest.raises(SwarmlabError, match=r"some managers are not back; some workers .*\n- manager-2.*\n- worker-2"):
        both.raise_if_missing()
    assert Rejoined([""], [], "a").then(Rejoined([""], [], "b")).unfinished == "a"
