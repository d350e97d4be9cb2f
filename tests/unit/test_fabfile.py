"""The fabfile's reporting around a run: the phases the run went through (its own Timings) as a
table and the result line; on an error, the message and the phases so far, and exit 1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

import fabfile
from cluster import flows
from cluster.config import Config, parse_config
from cluster.progress import Timings
from cluster.providers.static import StaticProvider
from cluster.session import Session
from tests.unit.fake_runner import FakeRunner
from tests.unit.test_tasks import fresh_cluster


def on_fake_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runner: FakeRunner) -> None:
    config = parse_config({"state_dir": str(tmp_path)})

    @contextmanager
    def fake_session(
        config: Config, target: str, dry_run: bool = False, timings: Timings | None = None
    ) -> Iterator[Session]:
        yield Session(config, StaticProvider(), runner, dry_run, timings if timings is not None else Timings())

    monkeypatch.setattr(fabfile, "load_config", lambda: config)
    monkeypatch.setattr(fabfile, "open_session", fake_session)


def test_fab_bootstrap_prints_each_phase_once_in_its_table_and_the_result(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on_fake_cluster(monkeypatch, tmp_path, fresh_cluster())
    fabfile.bootstrap(Context())
    out = capsys.readouterr().out
    table = out[out.index("phase  ") :]
    rows = [line.split()[0] for line in table.splitlines()[2:] if line and not line.startswith("result")]
    # Each step of the flow once, in its order (tests/unit/test_tasks.py lists them by name); one lb:
    # no keepalived.
    assert rows == [*(step.name for step in flows.BOOTSTRAP if step is not flows.KEEPALIVED_STEP), "total"]
    assert out.rstrip().endswith("result: changed")


def test_a_failing_task_says_why_shows_the_phases_so_far_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = fresh_cluster()
    runner.answer(r"swarm/join", "Error response from daemon: timeout", exit_code=1, node="worker-2")
    on_fake_cluster(monkeypatch, tmp_path, runner)
    with pytest.raises(Exit) as caught:
        fabfile.bootstrap(Context())
    assert caught.value.code == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "worker-2" in err
    table = out[out.index("phase  ") :]
    assert "swarm-init" in table and "swarm-join" in table and "FAILED" in table and "drain-managers" not in table
    assert "result:" not in out
