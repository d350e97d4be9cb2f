"""The join command as rendered, run by a real shell against a stand-in `curl` on PATH: the token
reaches the engine's API in the JSON body on stdin, never in an argv, and the engine's answers come
out as the CLI words them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cluster.inventory import Inventory
from cluster.plans.swarm import JOIN_CONTINUES, join_command
from tests.unit.fake_runner import lab_shaped_inventory

TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"
TIMEOUT = (
    '{"message":"Timeout was reached before node joined. The attempt to join the swarm will continue in the '
    'background. Use the \\"docker info\\" command to see the current swarm status of your node."}'
)
FAKE_CURL = """#!/bin/sh
# Records its argv (one word a line) and its stdin, then answers as the engine would, with what
# the command's -w asks for last (checked in the argv).
printf '%s\\n' "$@" > "$RECORD/argv"
cat > "$RECORD/body"
printf '%s' "$ANSWER"
printf '\\nHTTP %s' "$STATUS"
"""


@pytest.fixture
def inventory() -> Inventory:
    return lab_shaped_inventory()


def run(tmp_path: Path, command: str, status: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    curl = bin_dir / "curl"
    curl.write_text(FAKE_CURL)
    curl.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(tmp_path)}
    env |= {"STATUS": status, "ANSWER": answer}
    return subprocess.run(
        ["bash", "-c", command], input=TOKEN + "\n", capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_the_token_goes_in_the_json_body_on_stdin_and_in_no_argv(tmp_path: Path, inventory: Inventory) -> None:
    worker, leader = inventory.node("worker-1"), inventory.node("manager-1")
    command = join_command(worker, leader)
    assert TOKEN not in command and "--token" not in command
    done = run(tmp_path, command, "200")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "worker-1 joined the swarm through manager-1"
    argv = (tmp_path / "argv").read_text()
    assert (
        TOKEN not in argv
        and "--data-binary\n@-" in argv
        and "-w\n\\nHTTP %{http_code}\n" in argv
        and "http://docker/swarm/join" in argv
    )
    assert json.loads((tmp_path / "body").read_text()) == {
        "ListenAddr": f"{worker.private_ip}:2377",
        "AdvertiseAddr": str(worker.private_ip),
        "RemoteAddrs": [f"{leader.private_ip}:2377"],
        "JoinToken": TOKEN,
    }


def test_an_engine_error_reads_as_the_cli_words_it(tmp_path: Path, inventory: Inventory) -> None:
    command = join_command(inventory.node("worker-1"), inventory.node("manager-1"))
    answer = '{"message":"rpc error: code = InvalidArgument desc = A valid join token is necessary"}\n'
    done = run(tmp_path, command, "400", answer)
    assert done.returncode != 0
    assert done.stdout.splitlines() == [
        "Error response from daemon: rpc error: code = InvalidArgument desc = A valid join token is necessary",
        "(the engine answered HTTP 400 to POST /swarm/join)",
    ]


def test_a_join_that_continues_in_the_background_fails_unless_slow_ok(tmp_path: Path, inventory: Inventory) -> None:
    manager, leader = inventory.node("manager-2"), inventory.node("manager-1")
    strict = run(tmp_path, join_command(manager, leader), "503", TIMEOUT + "\n")
    assert strict.returncode != 0 and 'Use the "docker info" command' in strict.stdout
    tolerant = run(tmp_path, join_command(manager, leader, slow_ok=True), "503", TIMEOUT + "\n")
    assert tolerant.returncode == 0 and JOIN_CONTINUES in tolerant.stdout
    refused = run(tmp_path, join_command(manager, leader, slow_ok=True), "400", '{"message":"no"}\n')
    assert refused.returncode != 0 and "Error response from daemon: no" in refused.stdout


def test_an_engine_that_does_not_answer_is_an_error(tmp_path: Path, inventory: Inventory) -> None:
    done = run(tmp_path, join_command(inventory.node("worker-1"), inventory.node("manager-1")), "000", "curl: (7) x")
    assert done.returncode != 0 and "curl: (7) x" in done.stdout and "HTTP 000" in done.stdout
