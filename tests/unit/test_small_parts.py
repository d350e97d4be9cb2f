"""Small pure pieces: image tags, stack convergence, errors, known_hosts lines, timing tables."""

from __future__ import annotations

import pytest

from cluster.errors import CommandFailed, SwarmlabError, redact
from cluster.facts.services import Service, parse_stack_services
from cluster.images import BuildContext
from cluster.jointokens import read_join_tokens
from cluster.lab.keys import known_hosts_line, new_key_pair
from cluster.progress import PhaseResult, Timings
from tests.unit.fake_runner import FakeRunner, lab_shaped_inventory


def test_image_tag_is_a_hash_of_files_and_build_args() -> None:
    one = BuildContext({"Dockerfile": b"FROM x", "a.py": b"1"}, {"BASE_IMAGE": "b:1"})
    assert one.tag == BuildContext({"a.py": b"1", "Dockerfile": b"FROM x"}, {"BASE_IMAGE": "b:1"}).tag
    assert one.tag != BuildContext({"Dockerfile": b"FROM x", "a.py": b"2"}, {"BASE_IMAGE": "b:1"}).tag
    assert one.tag != BuildContext({"Dockerfile": b"FROM x", "a.py": b"1"}, {"BASE_IMAGE": "b:2"}).tag
    assert one.tar() == one.tar(), "the context tar must be reproducible"


@pytest.mark.parametrize(
    ("replicas", "converged"),
    [("3/3", True), ("2/3", False), ("0/1", False), ("0/0", True), ("1/1 (max 1 per node)", True), ("", False)],
)
def test_service_convergence(replicas: str, converged: bool) -> None:
    assert Service("s", replica_status=replicas).converged is converged


def test_parse_services_joins_replicas_update_state_and_last_task_error() -> None:
    output = (
        "hello_web|3/3\nx_y|1/2\n---\nhello_web|updating\nx_y|\n---\n"
        "hello_web.1|worker-1|Running 2 minutes ago|\n"
        "x_y.1|worker-2|Failed 5 seconds ago|task: non-zero exit (1)\nx_y.2|worker-3|Running 1 minute ago|\n"
    )
    assert parse_stack_services(output) == (
        Service("hello_web", replica_status="3/3", update_state="updating"),
        Service(
            "x_y",
            replica_status="1/2",
            last_error="node worker-2: Failed 5 seconds ago: task: non-zero exit (1)",
        ),
    )


@pytest.mark.parametrize(
    ("update", "converged", "failed"),
    [("", True, False), ("completed", True, False), ("updating", False, False), ("rollback_completed", False, True)],
)
def test_a_rolling_update_is_not_converged_until_it_completes(update: str, converged: bool, failed: bool) -> None:
    state = Service("s", replica_status="3/3", update_state=update)
    assert (state.converged, state.failed) == (converged, failed)
    # A rollback that was asked for (`fab rollback`) and ended has settled; one under way has not.
    assert state.settled is (update != "updating")
    assert not Service("s", replica_status="2/3", update_state="rollback_completed").settled


def test_command_failure_names_host_command_exit_and_tail() -> None:
    output = "\n".join(f"line {i}" for i in range(40))
    error = CommandFailed("worker-2", "docker info", 1, output)
    text = str(error)
    assert "worker-2" in text and "`docker info`" in text and "exit 1" in text
    assert "line 39" in text and "line 10" not in text


def test_redact_masks_secrets() -> None:
    assert redact("token SWMTKN-1-abc in output", ("SWMTKN-1-abc",)) == "token *** in output"


def test_known_hosts_line_uses_brackets_for_non_default_ports() -> None:
    key = new_key_pair("test")
    assert known_hosts_line("127.0.0.1", 2222, key.public_openssh).startswith("[127.0.0.1]:2222 ssh-ed25519 ")
    assert known_hosts_line("10.20.0.11", 22, key.public_openssh).startswith("10.20.0.11 ssh-ed25519 ")
    assert key.private_openssh.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_timing_table_reports_each_phase_and_the_total() -> None:
    timings = Timings([PhaseResult("swarm-init", 1.5, ["x"]), PhaseResult("haproxy", 0.5)])
    table = timings.table()
    assert "swarm-init" in table and "changed" in table and "no change" in table and "2.0" in table
    assert timings.changed


def test_join_tokens_are_read_once_per_role_and_an_empty_one_is_an_error() -> None:
    inventory = lab_shaped_inventory()
    runner, leader = FakeRunner(inventory), inventory.node("manager-1")
    runner.answer(r"^docker swarm join-token -q worker$", "SWMTKN-worker\n")
    runner.answer(r"^docker swarm join-token -q manager$", "SWMTKN-manager\n")
    assert read_join_tokens(runner, leader, ["worker", "manager"]) == {
        "worker": "SWMTKN-worker",
        "manager": "SWMTKN-manager",
    }
    runner.answer(r"^docker swarm join-token -q manager$", "")
    with pytest.raises(SwarmlabError, match=r"manager-1 gives an empty manager join token"):
        read_join_tokens(runner, leader, ["manager"])
