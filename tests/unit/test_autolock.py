"""Swarm autolock: the unlock command run by a real shell against stand-in `docker` and `curl` (the
key goes in the body on stdin, never in an argv; the first key the engine takes wins), the key
store in the state directory, and the tasks with a fake runner (bootstrap keeps the key, recover
unlocks, a locked swarm that lost quorum for good is refused with the way out, status says LOCKED)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cluster import flows
from cluster.errors import SwarmlabError
from cluster.inventory import Node
from cluster.operations import Wait
from cluster.plans.autolock import plan_autolock, plan_unlock, unlock_command
from cluster.plans.recover import RecoverRefused
from cluster.runners import Result
from cluster.state import StatePaths
from cluster.tasks import recover as recover_task
from cluster.tasks.status import status_report
from cluster.unlockkeys import KEYS_KEPT, UNLOCK_SECRET, key_history, store_key, stored_keys
from tests.unit.fake_runner import FakeRunner
from tests.unit.fake_runner import fake_session as session
from tests.unit.recorded import recorded
from tests.unit.test_certificates import certificates_everywhere, swarm_with_quorum
from tests.unit.test_day2_tasks import healthy_swarm, lost_quorum, probe_output

KEY = "SWMKEY-1-" + "A1b2C3d4" * 5 + "e+/"
OLD = "SWMKEY-1-" + "Zz9Yy8Xx" * 5 + "w+/"
# Answers as the engine does: the state docker info gives, and POST /swarm/unlock 200 for the right key only.
FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$STATE"
"""
FAKE_CURL = """#!/bin/sh
printf '%s\\n' "$@" >> "$RECORD/argv"
body=$(cat)
printf '%s\\n' "$body" >> "$RECORD/bodies"
if [ "$body" = "{\\"UnlockKey\\":\\"$RIGHT\\"}" ]; then printf 200; else printf 400; fi
"""


def run_unlock(tmp_path: Path, state: str, keys: str, right: str = KEY) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(tmp_path)}
    env |= {"STATE": state, "RIGHT": right}
    return subprocess.run(
        ["sh", "-c", unlock_command("manager-2")],
        input=keys,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_the_unlock_key_goes_in_the_body_on_stdin_and_the_first_key_taken_wins(tmp_path: Path) -> None:
    done = run_unlock(tmp_path, "locked", f"{OLD}\n{KEY}\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "manager-2 unlocked with key 2 of the state directory's"
    assert (tmp_path / "bodies").read_text().splitlines() == [
        json.dumps({"UnlockKey": OLD}, separators=(",", ":")),
        json.dumps({"UnlockKey": KEY}, separators=(",", ":")),
    ]
    argv = (tmp_path / "argv").read_text()
    assert KEY not in argv and OLD not in argv and "http://docker/swarm/unlock" in argv
    assert KEY not in unlock_command("manager-2")


def test_no_key_taken_fails_and_names_how_many_were_tried(tmp_path: Path) -> None:
    done = run_unlock(tmp_path, "locked", f"{OLD}\n")
    assert done.returncode == 1
    assert "manager-2 refused the 1 unlock key(s) the state directory holds" in done.stderr
    assert OLD not in done.stdout + done.stderr


def test_a_line_outside_the_key_alphabet_never_reaches_the_body(tmp_path: Path) -> None:
    done = run_unlock(tmp_path, "locked", f'x","Other":"1\n{KEY}\n')
    assert done.returncode == 0
    assert (tmp_path / "bodies").read_text().splitlines() == [json.dumps({"UnlockKey": KEY}, separators=(",", ":"))]


def test_an_engine_not_locked_is_left_alone(tmp_path: Path) -> None:
    done = run_unlock(tmp_path, "active", f"{KEY}\n")
    assert done.returncode == 0 and "manager-2 is not locked (active)" in done.stdout
    assert not (tmp_path / "bodies").exists(), "no request when there is nothing to unlock"


def test_the_key_store_keeps_the_newest_first_private_and_bounded(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    assert stored_keys(paths) == ()
    assert store_key(paths, OLD) and store_key(paths, KEY)
    assert stored_keys(paths) == (KEY, OLD)
    assert stat.S_IMODE(paths.unlock_keys.stat().st_mode) == 0o600
    assert not store_key(paths, KEY), "the newest again changes nothing"
    many = key_history([f"SWMKEY-1-k{i}" for i in range(10)], KEY)
    assert len(many) == KEYS_KEPT and many[0] == KEY


def test_plan_autolock_turns_it_on_only_when_off() -> None:
    assert not plan_autolock("manager-1", on=True, wanted=True).operations
    (run,) = plan_autolock("manager-1", on=False, wanted=True).runs
    assert run.command == "docker swarm update --autolock=true >/dev/null", "the CLI prints the key: never shown"


def autolocked_swarm() -> FakeRunner:
    runner = certificates_everywhere(swarm_with_quorum(), expired_on="nowhere")
    runner.answer(r"AutoLockManagers", "true\n")
    runner.answer(r"^docker swarm unlock-key -q$", f"{KEY}\n")
    return runner


def test_bootstrap_turns_autolock_on_and_keeps_the_key_unprinted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = healthy_swarm()
    runner.answer(r"AutoLockManagers", "false\n")
    runner.answer(r"^docker swarm unlock-key -q$", f"{KEY}\n")
    chosen = session(runner, tmp_path, autolock=True)
    flows.run((flows.LEADER, flows.AUTOLOCK), chosen)
    assert runner.commands("--autolock") == ["docker swarm update --autolock=true >/dev/null"]
    assert stored_keys(chosen.state) == (KEY,)
    out = capsys.readouterr().out
    assert KEY not in out and "unlock key kept in" in out
    flows.run((flows.LEADER, flows.AUTOLOCK), session(autolocked_swarm(), tmp_path, autolock=True))
    assert "autolock already on" in capsys.readouterr().out


def test_recover_unlocks_a_locked_manager_with_the_kept_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = autolocked_swarm()
    runner.answer(r"LocalNodeState", "locked\n", node="manager-2")
    original = runner.run

    def run(node: Node, command: str, **kwargs: Any) -> Result:
        if "/swarm/unlock" in command:  # the engine takes the key: active from now on
            runner.answer(r"LocalNodeState", "active\n", node="manager-2")
        return original(node, command, **kwargs)

    runner.run = run  # type: ignore[method-assign]
    chosen = session(runner, tmp_path, autolock=True)
    store_key(chosen.state, OLD)
    store_key(chosen.state, KEY)
    flows.run(flows.RECOVER, chosen)
    assert "the swarm has quorum again" in capsys.readouterr().out
    unlocks = [c for c in runner.calls if "/swarm/unlock" in c.command]
    assert [c.node for c in unlocks] == ["manager-2"]
    assert unlocks[0].stdin == f"{KEY}\n{OLD}\n" and KEY not in unlocks[0].command


def test_a_locked_manager_and_no_kept_key_says_how_to_unlock_by_hand(tmp_path: Path) -> None:
    runner = autolocked_swarm()
    runner.answer(r"LocalNodeState", "locked\n", node="manager-2")
    with pytest.raises(
        SwarmlabError, match=r"manager-2 locked \(swarm autolock\) and .*swarm-unlock-keys holds no key"
    ):
        flows.run(flows.RECOVER, session(runner, tmp_path, autolock=True))


def test_an_autolocked_swarm_that_lost_quorum_for_good_is_not_reformed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recover_task, "REGAIN_TIMEOUT", 0.0)
    runner = lost_quorum()
    runner.answer(r"BEGIN ENCRYPTED PRIVATE KEY", "1\n", node="manager-3")
    with pytest.raises(RecoverRefused, match=r"autolocked.*moby/moby#36852.*`fab restore --swarm`"):
        flows.run(flows.RECOVER, session(runner, tmp_path, autolock=True))
    assert not runner.commands("force-new-cluster")


def test_plan_unlock_feeds_the_keys_by_name_and_waits_until_active() -> None:
    plan = plan_unlock(["manager-1"])
    (run,) = plan.runs
    assert run.stdin == UNLOCK_SECRET and run.node == "manager-1"
    assert [op.what for op in plan.operations if isinstance(op, Wait)] == ["manager-1 active"]


def test_status_says_which_manager_is_locked_and_the_fix() -> None:
    runner = healthy_swarm()
    locked = json.loads(recorded("swarm_manager")) | {"LocalNodeState": "locked", "ControlAvailable": False}
    runner.answer(r"leader=yes", probe_output(json.dumps(locked), leader=False), node="manager-2")
    report = status_report(runner)
    assert "LOCKED (autolock)" in report
    assert "LOCKED: manager-2 (swarm autolock" in report and "`fab recover` unlocks it" in report
