"""Logs, events and the cluster map: parsers fed with outputs recorded from a real lab, the options
checked before anything runs, and the read-only tasks end to end with a fake runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.config import parse_config
from cluster.durations import parse_duration
from cluster.errors import CommandFailed, OptionErrors, SwarmlabError
from cluster.facts.logs import (
    events_since,
    parse_events,
    parse_log_line,
    parse_read_failures,
    parse_service_logs,
    service_follow_command,
    task_logs,
)
from cluster.facts.services import Task
from cluster.facts.tasks import parse_node_tasks, parse_service_tasks
from cluster.lab.layout import lab_inventory
from cluster.providers.static import StaticProvider
from cluster.session import Session
from cluster.state import StatePaths, write_private
from cluster.tasks.events import event_query, format_event, swarm_events
from cluster.tasks.logs import format_log_line, log_query, resolve_service, service_logs, short_time
from tests.unit.fake_runner import FakeRunner
from tests.unit.recorded import recorded

LOGS = recorded("service_logs")
EVENTS = recorded("events")
NODE_TASKS = recorded("node_tasks")
MANAGER = recorded("swarm_manager")
SERVICES = "registration_api\nregistration_otp\nregistration_ui\nhello_web\n"


# --- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172_800), ("1d2h3m4s", 93_784)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "--since") == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "1m1h", "-5m", "1.5h", "m", "0s", "10 m"])
def test_malformed_durations_name_the_flag(text: str) -> None:
    with pytest.raises(SwarmlabError, match=r"^--since="):
        parse_duration(text, "--since")


# --- log lines -----------------------------------------------------------------------------------


def test_log_lines_recorded_from_a_lab_parse_into_time_task_node_and_message() -> None:
    lines = parse_service_logs(LOGS)
    assert len(lines) == 8 and all(line.framed for line in lines)
    first = lines[0]
    assert (first.service, first.slot, first.task_id, first.node) == (
        "registration_otp",
        "1",
        "6o2rr9iavjfqyn77tvq7khb8l",
        "worker-2",
    )
    assert first.time == "2026-11-25T16:12:38.001049754Z"
    assert first.message.startswith("2026-11-25 16:12:38,000 INFO otp@2494aad90c09 registration.common.rpc: serving")
    assert {line.node for line in lines if line.service == "registration_ui"} == {"worker-1", "worker-2", "worker-3"}


def test_a_message_with_bars_and_an_unframed_line() -> None:
    line = parse_log_line("2026-11-25T16:12:38Z s.2.abc@worker-1    | a | b ")
    assert (line.slot, line.message) == ("2", "a | b ")
    error = parse_log_line("error from daemon in stream: Error grabbing logs: EOF")
    assert not error.framed and error.message.startswith("error from daemon")
    assert format_log_line(error, ()) == error.message


def test_a_log_line_prints_its_time_task_and_node_with_secrets_masked() -> None:
    line = parse_log_line("2026-11-25T16:12:53.340314088Z registration_api.1.ax6xhjrd7tmt@worker-2    | pw=s3cret!")
    assert format_log_line(line, ("s3cret!",), "registration") == (
        "2026-11-25T16:12:53.340Z  api.1.ax6xhj@worker-2  pw=***"
    )
    assert short_time("2026-11-25T16:12:54.3Z") == "2026-11-25T16:12:54.300Z"  # RFC 3339 nano drops zeros
    assert short_time("2026-11-25T16:12:54Z") == "2026-11-25T16:12:54.000Z"


def test_logs_are_read_task_by_task_each_bounded_and_follow_is_bounded_in_time() -> None:
    command = task_logs(["t1", "t2"], 200, None).command
    assert command.startswith("for t in t1 t2; do timeout 20 docker service logs --timestamps --no-trunc --tail 200 $t")
    assert 'echo "#swarmlab-logs-failed $t $status"' in command
    assert "--tail all --since 600s" in task_logs(["t1"], None, 600).command
    assert task_logs(["x; rm -rf /"], 5, None).command.startswith("for t in 'x; rm -rf /'; do")
    follow = service_follow_command("registration_api", 5, None, 60)
    assert follow.startswith("timeout 60 docker service logs --follow ") and "[ $status -eq 124 ] && exit 0" in follow
    assert parse_read_failures("x\n#swarmlab-logs-failed abc 124\n") == {"abc": 124}


def test_a_services_tasks_recorded_from_a_lab() -> None:
    tasks = parse_service_tasks(recorded("service_tasks"))
    assert len(tasks) == 10 and {t.slot_name for t in tasks} == {"1", "2", "3"}
    assert tasks[0] == Task(task_id="j7x06kgukd8lcbuhk98a9enxz", slot=1, name="registration_api.1", node="worker-2")


def test_bad_options_are_all_reported_before_anything_runs() -> None:
    with pytest.raises(OptionErrors) as caught:
        log_query("api", tail=0, since="5x", follow=True, follow_for="2h", grep="(", task=-1)
    text = str(caught.value)
    assert text.startswith("invalid option(s) (5 problem(s))")
    for flag in ("--tail=0", "--since=5x", "--follow-for=2h", "--grep=(", "--task=-1"):
        assert flag in text
    query = log_query("api", since="10m", follow=True, grep="GET|POST", task=2)
    assert (query.since_seconds, query.follow_seconds, query.slot) == (600, 60, "2")


def test_services_resolve_by_full_or_short_name_and_an_unknown_one_lists_them() -> None:
    names = SERVICES.split()
    assert resolve_service("api", names) == "registration_api"
    assert resolve_service("hello_web", names) == "hello_web"
    with pytest.raises(SwarmlabError, match="no service 'nope' on the swarm; services: registration_api, "):
        resolve_service("nope", names)
    with pytest.raises(SwarmlabError, match="ambiguous: a_web, hello_web"):
        resolve_service("web", ["a_web", "hello_web"])


def session(runner: FakeRunner, tmp_path: Path) -> Session:
    return Session(parse_config({"state_dir": str(tmp_path)}), StaticProvider(), runner)


def lab_runner() -> FakeRunner:
    runner = FakeRunner(lab_inventory(parse_config({}), StatePaths(Path("/state"))))
    runner.answer(r"docker info", MANAGER, node="manager-1")
    runner.answer(r"docker service ls", SERVICES)
    # The tasks of the recorded log lines: one otp task, three ui tasks.
    runner.answer(r"docker service ps .* registration_otp", "6o2rr9iavjfqyn77tvq7khb8l|registration_otp.1|worker-2\n")
    runner.answer(
        r"docker service ps .* registration_ui",
        "yarsltlt3oln8klynse4f00kc|registration_ui.2|worker-2\nizvdjbiwjpl5c67yis0dvsgoi|registration_ui.3|worker-3\n"
        "slcxcjug6hdlwqixbs6uglvft|registration_ui.1|worker-1\n",
    )
    return runner


def test_fab_logs_prints_every_task_in_time_order_masked_and_filtered(tmp_path: Path) -> None:
    runner = lab_runner()
    secret = "2494aad90c09"  # pretend the container name were a credential: it must not show
    write_private(tmp_path / "static" / "demo" / "credentials", json.dumps({"api_password": secret}).encode())
    runner.answer(r"docker service logs", LOGS)
    printed: list[str] = []
    count = service_logs(session(runner, tmp_path), log_query("ui", grep="GET /healthz", task=2), printed.append)
    [command] = runner.commands("docker service logs")
    # --task 2: only that slot's task is read; --grep: a wider window of it is searched.
    assert command.startswith("for t in yarsltlt3oln8klynse4f00kc; do ") and "--tail 2000" in command
    assert count == 2 and all(" ui.2.yarslt@worker-2  " in line for line in printed)
    everything: list[str] = []
    service_logs(session(runner, tmp_path), log_query("otp"), everything.append)
    assert "--tail 200 " in runner.commands("docker service logs")[-1]
    assert len(everything) == 8 and everything == sorted(everything)  # one time line across tasks
    assert not any(secret in line for line in everything) and any("otp@***" in line for line in everything)
    with pytest.raises(SwarmlabError, match="registration_ui has no task in slot 7; its slots: 1, 2, 3"):
        service_logs(session(runner, tmp_path), log_query("ui", task=7), print)


def test_fab_logs_follow_streams_through_the_runner(tmp_path: Path) -> None:
    runner = lab_runner()
    runner.answer(r"timeout 5 docker service logs --follow", LOGS)
    printed: list[str] = []
    service_logs(session(runner, tmp_path), log_query("otp", follow=True, follow_for="5s"), printed.append)
    assert len(printed) == 8


def test_fab_logs_of_an_unknown_service_runs_no_logs_command(tmp_path: Path) -> None:
    runner = lab_runner()
    with pytest.raises(SwarmlabError, match="services: registration_api, registration_otp"):
        service_logs(session(runner, tmp_path), log_query("nope"), print)
    assert not runner.commands("docker service logs")


def test_a_failed_command_masks_secrets_in_its_error(tmp_path: Path) -> None:
    runner = lab_runner()
    write_private(tmp_path / "static" / "demo" / "credentials", json.dumps({"db_password": "hunter22"}).encode())
    runner.answer(r"docker service ps", "boom hunter22", exit_code=1)
    with pytest.raises(CommandFailed) as caught:
        service_logs(session(runner, tmp_path), log_query("api"), print)
    assert "hunter22" not in str(caught.value) and "on manager-1" in str(caught.value)


def test_a_task_whose_read_never_ends_is_cut_and_named_and_the_others_print(tmp_path: Path) -> None:
    runner = lab_runner()
    partial = [line for line in LOGS.splitlines() if "registration_ui." in line and "registration_ui.3" not in line]
    runner.answer(r"docker service logs", "\n".join([*partial, "#swarmlab-logs-failed izvdjbiwjpl5c67yis0dvsgoi 124"]))
    printed: list[str] = []
    service_logs(session(runner, tmp_path), log_query("ui"), printed.append)
    assert len(printed) == 5 and printed[-1].startswith(
        "# ui.3 on worker-3 (izvdjb): its log read failed, not complete"
    )


# --- events --------------------------------------------------------------------------------------


def test_events_recorded_from_a_lab_print_one_a_line() -> None:
    events = parse_events(EVENTS)
    assert len(events) == 12
    assert {e.type for e in events} == {"node", "network", "service"}
    drained = next(e for e in events if e.name == "manager-3")
    assert format_event(drained) == (
        "2026-11-25T16:08:52.102Z  node     update  manager-3  availability.new=drain availability.old=active"
    )
    created = next(e for e in events if e.name == "registration_api")
    assert format_event(created).split()[1:] == ["service", "create", "registration_api"]


def test_events_command_is_bounded_and_filtered() -> None:
    command = events_since(600, ("service", "node")).command
    assert command.startswith("docker events --since 600s --until 0s --filter scope=swarm ")
    assert "--filter type=service --filter type=node" in command


def test_event_options_are_checked(tmp_path: Path) -> None:
    assert event_query("10m", "service,node,service").types == ("service", "node")
    with pytest.raises(OptionErrors, match=r"--since=soon: is not a duration[\s\S]*--type=volume: has no swarm"):
        event_query("soon", "volume")
    runner = lab_runner()
    runner.answer(r"docker events", EVENTS)
    printed: list[str] = []
    assert swarm_events(session(runner, tmp_path), event_query("1h", "node"), printed.append) == 12
    assert printed == sorted(printed)
    assert "--filter type=node" in runner.commands("docker events")[0]


def test_events_come_from_every_manager_each_once(tmp_path: Path) -> None:
    # A manager whose store watch broke (after a leader change) reports nothing: the others count.
    runner = lab_runner()
    runner.answer(r"docker events", EVENTS)
    runner.answer(r"docker events", "", node="manager-1")  # the leader here, and the last answer wins
    printed: list[str] = []
    assert swarm_events(session(runner, tmp_path), event_query("1h"), printed.append) == 12
    assert len(runner.commands("docker events")) == 3


# --- tasks per node ------------------------------------------------------------------------------


def test_node_tasks_recorded_from_a_lab() -> None:
    tasks = parse_node_tasks(NODE_TASKS + NODE_TASKS)  # repeated rows count once
    assert len(tasks) == 16
    assert {t.node for t in tasks} == {"worker-1", "worker-2", "worker-3"}
    assert tasks[0].name == "registration_api.3" and tasks[0].image.endswith("/swarmlab/app:c9ee648dc4d6")
