"""`fab backup --keep N`: the cluster's N newest backups are kept, its older ones removed, and nothing
that is not one of its backups (by name AND by manifest) is ever touched; N is checked before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

import fabfile
from cluster import backups
from cluster.backups import Found
from cluster.errors import ConfigError, OptionErrors
from cluster.plans.backup import backup_time, plan_prune
from cluster.tasks.backup import keep_option, prune_backups
from tests.unit.fake_runner import FakeRunner, fake_session, lab_shaped_inventory
from tests.unit.test_backup import make_backup

STAMPS = ["20261101T020000Z", "20261102T020000Z", "20261103T020000Z", "20261104T020000Z", "20261105T020000Z"]


def ours(name: str) -> Found:
    return Found(name, directory=True, cluster="demo")


def test_the_newest_are_kept_and_the_older_removed_oldest_first() -> None:
    found = [ours(s) for s in reversed(STAMPS)]  # the order they are found in does not matter
    pruning = plan_prune(found, "demo", 2)
    assert pruning.kept == ("20261105T020000Z", "20261104T020000Z")
    assert pruning.removed == ("20261101T020000Z", "20261102T020000Z", "20261103T020000Z")
    assert pruning.ignored == ()
    assert plan_prune(found, "demo", 5).removed == plan_prune(found, "demo", 9).removed == ()
    # A dry run: the backup it would take is the newest, and takes one of the places.
    assert plan_prune(found, "demo", 2, taking=True).kept == ("20261105T020000Z",)


def test_what_is_not_one_of_the_clusters_backups_is_left_alone_however_old() -> None:
    found = [
        ours("20261105T020000Z"),
        Found("20260101T000000Z", directory=False),  # a file (or a link) named as a backup
        Found("notes", directory=True, cluster="demo"),  # a manifest, but not a backup's name
        Found("20260102T000000Z", directory=True),  # a backup's name, no manifest (interrupted, or not one)
        Found("20260103T000000Z", directory=True, cluster="other"),  # another cluster's backup
        Found("20260104T000000Z", directory=True, cluster="demo", unlisted=("my-notes.txt",)),
        Found("2026-01-05T00:00:00Z", directory=True, cluster="demo"),  # not exactly the stamp format
        ours("20261104T020000Z"),
    ]
    pruning = plan_prune(found, "demo", 1)
    assert pruning.kept == ("20261105T020000Z",) and pruning.removed == ("20261104T020000Z",)
    assert pruning.ignored == (
        "20260101T000000Z: not a directory",
        "notes: not named as a backup's time (%Y%m%dT%H%M%SZ)",
        "20260102T000000Z: no readable manifest.json (an interrupted backup, or not one)",
        "20260103T000000Z: a backup of cluster other",
        "20260104T000000Z: holds files its manifest.json does not name: my-notes.txt",
        "2026-01-05T00:00:00Z: not named as a backup's time (%Y%m%dT%H%M%SZ)",
    )
    assert backup_time("20261105T020000Z") is not None and backup_time("2026115T020000Z") is None


@pytest.mark.parametrize("keep", [0, -1])
def test_keeping_none_is_refused(keep: int) -> None:
    with pytest.raises(ConfigError, match=r"--keep=-?\d: would remove every backup. Fix: .*1 or more"):
        plan_prune([ours(STAMPS[0])], "demo", keep)


def test_the_keep_option_is_checked_before_anything_runs() -> None:
    assert keep_option("") is None and keep_option("3") == 3
    with pytest.raises(OptionErrors, match=r"--keep=0: would remove every backup"):
        keep_option("0")
    with pytest.raises(OptionErrors, match=r"--keep=two: is not a whole number. Fix: give how many"):
        keep_option("two")


# --- on disk ---------------------------------------------------------------------------------------------


def test_survey_reads_names_manifests_and_unlisted_files(tmp_path: Path) -> None:
    make_backup(tmp_path, STAMPS[0])
    make_backup(tmp_path, STAMPS[1], cluster="other")
    (make_backup(tmp_path, STAMPS[2]) / "registration" / "extra.sql").write_text("mine\n")
    (tmp_path / STAMPS[3]).mkdir()
    (tmp_path / STAMPS[4]).symlink_to(tmp_path / STAMPS[0])
    assert backups.survey(tmp_path) == [
        Found(STAMPS[0], True, "demo"),
        Found(STAMPS[1], True, "other"),
        Found(STAMPS[2], True, "demo", ("registration/extra.sql",)),
        Found(STAMPS[3], True),
        Found(STAMPS[4], False),
    ]
    assert backups.survey(tmp_path / "none yet") == []


def test_prune_removes_only_the_clusters_older_backups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = fake_session(FakeRunner(lab_shaped_inventory()), tmp_path)
    where = session.state.backups
    for stamp in STAMPS[:3]:
        make_backup(where, stamp)
    foreign = make_backup(where, "20200101T000000Z", cluster="other")
    archive = (foreign / "swarm.tar.gz").read_bytes()
    stray = where / "20200102T000000Z"
    stray.mkdir()
    (stray / "manifest.json").write_text("{}")  # a manifest in name only
    prune_backups(session, 1)
    assert sorted(p.name for p in where.iterdir()) == ["20200101T000000Z", "20200102T000000Z", STAMPS[2]]
    assert (foreign / "swarm.tar.gz").read_bytes() == archive and (stray / "manifest.json").exists()
    out = capsys.readouterr().out
    assert f"removed backup {where / STAMPS[0]}" in out and f"removed backup {where / STAMPS[1]}" in out
    assert "left alone: " in out and "20200101T000000Z: a backup of cluster other" in out
    assert session.timings.phases[-1].outcome == "changed"


def test_prune_dry_run_removes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = fake_session(FakeRunner(lab_shaped_inventory()), tmp_path, dry_run=True)
    where = session.state.backups
    for stamp in STAMPS[:2]:
        make_backup(where, stamp)
    prune_backups(session, 2)  # the backup a dry run would take keeps one of the two places
    assert sorted(p.name for p in where.iterdir()) == STAMPS[:2]
    assert f"would remove backup {where / STAMPS[0]}" in capsys.readouterr().out
    assert session.timings.phases[-1].outcome == "would change"


def test_fab_backup_keep_0_fails_before_a_session_opens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("a session was opened for a bad --keep")

    monkeypatch.setattr(fabfile, "open_session", no_session)
    with pytest.raises(Exit):
        fabfile.backup_task(Context(), keep="0")
    assert "--keep=0: would remove every backup. Fix: give how many" in capsys.readouterr().err
