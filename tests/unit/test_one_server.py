"""The data directory's lock (services/images/one-server.sh), run as the images run it: sourced by a
POSIX shell that then execs the server, which inherits the locked descriptor."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.workload import REPO_ROOT

SCRIPT = REPO_ROOT / "services/images/one-server.sh"


def server(lock: Path, wait: int, then: str = "exec sleep 30") -> subprocess.Popen[str]:
    """An entrypoint's last lines: take the lock, then become the 'server'."""
    body = f". {shlex.quote(str(SCRIPT))}; hold_data_dir {shlex.quote(str(lock))} {wait}; {then}"
    return subprocess.Popen(["sh", "-c", body], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def first(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    holder = server(tmp_path / "server.lock", 1)
    assert holder.stdout is not None
    assert "holding" in holder.stdout.readline()  # the lock is taken before the server starts
    yield holder
    holder.kill()
    holder.wait()


def test_a_second_server_on_the_directory_gives_up_without_starting(
    tmp_path: Path, first: subprocess.Popen[str]
) -> None:
    second = server(tmp_path / "server.lock", 1, then="echo started")
    out, err = second.communicate(timeout=10)
    assert second.returncode == 1 and "started" not in out
    assert "another server holds" in err and "still held after 1 s" in err


def test_the_lock_is_the_servers_until_it_exits(tmp_path: Path, first: subprocess.Popen[str]) -> None:
    waiting = server(tmp_path / "server.lock", 10, then="echo started")
    time.sleep(0.5)
    assert waiting.poll() is None  # waiting while the first server runs
    first.kill()
    out, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 0 and out.splitlines()[-1] == "started" and "waiting up to 10 s" in err
