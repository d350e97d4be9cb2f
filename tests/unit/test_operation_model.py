"""The one executor: it runs operations in order, feeds runtime secrets on stdin and masks them,
waits with a timeout that names what it waited for, and in a dry run runs nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.config import parse_config
from cluster.errors import CommandFailed, HostsFailed, SwarmlabError
from cluster.executor import Executor
from cluster.lab.layout import lab_inventory
from cluster.operations import Fetch, Parallel, Plan, Run, Wait, Write
from cluster.progress import PhaseResult
from cluster.state import StatePaths
from cluster.waiting import Verdict, WaitFailed
from tests.unit.fake_runner import FakeRunner

ROOT = Path(__file__).resolve().parents[2]


def runner() -> FakeRunner:
    return FakeRunner(lab_inventory(parse_config({}), StatePaths(Path("/state"))))


def test_operations_run_in_order_and_only_changes_are_reported() -> None:
    fake = runner()
    progress = PhaseResult("t")
    plan = Plan(
        (
            Run("manager-1", "check", "a check", changes=False),
            Write("lb-1", "/etc/x", b"data", "a file"),
            Run("manager-1", "change", "something changed"),
        ),
        notes=("noticed",),
    )
    Executor(fake).execute(plan, progress)
    assert fake.commands() == ["check", "change"] and fake.files == {("lb-1", "/etc/x"): b"data"}
    assert progress.changes == ["something changed"] and plan.changes


def test_a_secret_goes_on_stdin_and_is_masked_in_errors() -> None:
    fake = runner()
    fake.answer("docker secret create", "refused value hunter2-secret-value", exit_code=1)
    plan = Plan((Run("manager-1", "docker secret create s -", "created", stdin="db_password"),))
    with pytest.raises(CommandFailed) as caught:
        Executor(fake, secrets={"db_password": "hunter2-secret-value"}).execute(plan, PhaseResult("t"))
    assert fake.calls[0].stdin == "hunter2-secret-value"
    assert "hunter2-secret-value" not in str(caught.value) and "***" in str(caught.value)


def test_a_plan_that_needs_a_secret_nobody_gave_stops_before_running() -> None:
    fake = runner()
    plan = Plan((Run("worker-1", "docker swarm join", "joined", stdin="join-token-worker"),))
    with pytest.raises(SwarmlabError, match="join-token-worker"):
        Executor(fake).execute(plan, PhaseResult("t"))
    assert fake.calls == []


def test_dry_run_runs_nothing_and_says_what_would_change(capsys: pytest.CaptureFixture[str]) -> None:
    fake = runner()
    progress = PhaseResult("t")
    plan = Plan(
        (
            Write("lb-1", "/etc/x", b"data", "a file"),
            Parallel((Run("worker-1", "a", "one"), Run("worker-2", "b", "two")), "workers"),
            Wait("manager-1", "probe", lambda out: Verdict.ready(), "ready", 5),
        )
    )
    Executor(fake, dry_run=True).execute(plan, progress)
    assert fake.calls == [] and fake.files == {}
    assert progress.outcome == "would change" and progress.changes == []
    out = capsys.readouterr().out
    assert "would write /etc/x on lb-1" in out and "would change on worker-2: two" in out and "would wait" in out


def test_a_wait_that_times_out_names_what_it_waited_for_and_what_it_saw() -> None:
    fake = runner()
    fake.answer("docker node ls", "worker-3 Down")
    wait = Wait("manager-1", "docker node ls", lambda out: Verdict.waiting(f"saw: {out}"), "every node Ready", 0.3, 0.1)
    with pytest.raises(WaitFailed) as caught:
        Executor(fake).execute(Plan((wait,)), PhaseResult("t"))
    assert "on manager-1: every node Ready" in str(caught.value) and "saw: worker-3 Down" in str(caught.value)
    assert len(fake.calls) >= 2, "it polled more than once"


def test_a_wait_that_fails_for_good_stops_at_once() -> None:
    fake = runner()
    wait = Wait("manager-1", "probe", lambda out: Verdict.failure("rolled back"), "converged", 60)
    with pytest.raises(WaitFailed, match="rolled back"):
        Executor(fake).execute(Plan((wait,)), PhaseResult("t"))
    assert len(fake.calls) == 1


def test_parallel_steps_report_every_failure_by_node_and_purpose() -> None:
    fake = runner()
    fake.answer("^build", "no space left", exit_code=1)
    runs = (Run("storage-1", "build a", "image a"), Run("storage-1", "build b", "image b"), Run("storage-1", "ok", "c"))
    progress = PhaseResult("t")
    with pytest.raises(HostsFailed) as caught:
        Executor(fake).execute(Plan((Parallel(runs, "builds"),)), progress)
    assert set(caught.value.failures) == {"storage-1 (image a)", "storage-1 (image b)"}
    assert sorted(fake.commands()) == ["build a", "build b", "ok"], "every run was tried"
    assert [c.split(" (")[0] for c in progress.changes] == ["c"]


@pytest.mark.parametrize("target", ["static", "pulumi"])
def test_static_and_pulumi_targets_never_load_the_lab_or_the_docker_sdk(tmp_path: Path, target: str) -> None:
    """The cloud path needs no local Docker engine: importing the fabfile, every flow and task, and
    opening a session on a static or Pulumi target imports no lab code and no Docker SDK (the Pulumi
    CLI's answer is the inventory file's content, so no pulumi runs)."""
    kind = "openstack" if target == "pulumi" else "static"
    inventory = lab_inventory(parse_config({}), StatePaths(tmp_path)).model_copy(update={"provider": kind})
    path = tmp_path / "inventory.json"
    path.write_text(inventory.model_dump_json())
    code = (
        "import sys, shutil; import fabfile, cluster.flows, cluster.tasks.deploy, cluster.tasks.status; "
        "from cluster.config import parse_config; from cluster.session import open_session; "
        "import cluster.providers.pulumi as pulumi; "
        f"pulumi.run_local = lambda command: open({str(path)!r}).read(); shutil.which = lambda name: name; "
        f"target = {str(path) if target == 'static' else 'pulumi'!r}; "
        "session = open_session(parse_config({}), target).__enter__(); "
        "print(session.provider.name, session.inventory.provider, "
        "sorted(m for m in sys.modules if m.startswith(('cluster.lab', 'docker'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split(" ", 2) == [target, kind, "[]\n"]


def test_a_fetch_copies_a_node_file_to_a_private_local_file_and_a_dry_run_fetches_nothing(tmp_path: Path) -> None:
    fake = runner()
    fake.remote_files[("manager-2", "/root/x.tar.gz")] = b"swarm state"
    plan = Plan((Fetch("manager-2", "/root/x.tar.gz", tmp_path / "x.tar.gz", "the swarm state"),))
    Executor(fake, dry_run=True).execute(plan, PhaseResult("t"))
    assert not (tmp_path / "x.tar.gz").exists() and fake.calls == []
    Executor(fake).execute(plan, PhaseResult("t"))
    assert (tmp_path / "x.tar.gz").read_bytes() == b"swarm state"
    assert (tmp_path / "x.tar.gz").stat().st_mode & 0o777 == 0o600
    missing = Plan((Fetch("manager-2", "/root/none", tmp_path / "none", "nothing"),))
    with pytest.raises(CommandFailed, match="on manager-2: `sftp get /root/none"):
        Executor(fake).execute(missing, PhaseResult("t"))
