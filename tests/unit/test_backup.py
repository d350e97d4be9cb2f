"""Backups: the manager that may stop, the commands that dump and load, the directory and manifest on
the operator's machine, and restores refused (changing nothing) from a missing or corrupt backup."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from cluster import backups, flows
from cluster.backups import BackupError
from cluster.config import parse_config
from cluster.errors import CommandFailed
from cluster.facts.swarm import parse_nodes
from cluster.lab.layout import lab_inventory
from cluster.operations import Fetch, Run, Wait, Write
from cluster.plans.backup import (
    BackupRefused,
    Located,
    choose_manager,
    engine_commands,
    plan_data_backup,
    plan_data_restore,
    plan_swarm_backup,
    plan_swarm_restore,
)
from cluster.providers.static import StaticProvider
from cluster.session import Session
from cluster.state import StatePaths
from cluster.tasks.backup import backup, restore
from cluster.workload import load_workload
from tests.unit.fake_runner import FakeRunner
from tests.unit.recorded import recorded

NODES = parse_nodes(recorded("nodes"))
STAMP = "20260101T000000Z"
SQL = b"-- a dump\nCREATE TABLE student (id int);\n"
RDB = b"REDIS0010\xff\x00binary"


@pytest.fixture
def fixed_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backups, "stamp", lambda now=None: STAMP)


def swarm_archive(
    mark: str | None = backups.archive_mark("demo", STAMP, "manager-2"), extra: tarfile.TarInfo | None = None
) -> bytes:
    """A swarm directory as `fab backup` archives it: swarm/ and our mark (None: a foreign archive)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in ("swarm", "swarm/raft"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        files = {"swarm/state.json": b"state"} | ({backups.ARCHIVE_MARK: mark.encode()} if mark is not None else {})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if extra is not None:
            archive.addfile(extra)
    return buffer.getvalue()


# --- which manager, which commands ----------------------------------------------------------------------


def test_the_swarm_state_comes_from_a_reachable_manager_that_is_not_the_leader() -> None:
    assert choose_manager(NODES).hostname == "manager-2"  # manager-1 leads in the recorded facts


def test_no_backup_when_stopping_a_manager_would_lose_quorum() -> None:
    down = tuple(
        replace(n, state="down", reachability="unreachable") if n.hostname == "manager-3" else n for n in NODES
    )
    with pytest.raises(BackupRefused, match=r"2 of 3 managers are up: stopping one .* fewer than the 2 Raft needs"):
        choose_manager(down)
    alone = tuple(n for n in NODES if n.hostname not in ("manager-2", "manager-3"))
    with pytest.raises(BackupRefused):
        choose_manager(alone)


def test_the_engine_is_started_again_whatever_tar_did() -> None:
    plan = plan_swarm_backup("manager-2", "manager-1", False, Path("/b/swarm.tar.gz"), STAMP, cluster="demo")
    archive, back, fetch, clean = plan.operations
    assert isinstance(archive, Run) and archive.node == "manager-2"
    stop, start = engine_commands(systemd=False)
    mark = backups.archive_mark("demo", STAMP, "manager-2")
    assert archive.command.startswith(
        f"mkdir -p -m 700 /root/.swarmlab/backup && printf %s '{mark}' > /root/.swarmlab/backup/swarmlab-backup.json"
        f" && {stop} && "
    )
    assert (
        f"tar -C /var/lib/docker -czf /root/.swarmlab/backup/{STAMP}-swarm.tar.gz swarm "
        f"-C /root/.swarmlab/backup swarmlab-backup.json; rc=$?; {start} || rc=$?"
    ) in archive.command
    assert isinstance(back, Wait) and back.node == "manager-1" and "manager-2 back" in back.what
    assert isinstance(fetch, Fetch) and fetch.local == Path("/b/swarm.tar.gz") and fetch.changes
    assert isinstance(clean, Run) and clean.command == (
        f"rm -f /root/.swarmlab/backup/{STAMP}-swarm.tar.gz /root/.swarmlab/backup/swarmlab-backup.json"
    )
    assert engine_commands(systemd=True)[1] == "systemctl start docker"


def located() -> Located:
    spec = load_workload("registration", "lab").manifest.backups[0]
    return Located("registration", spec, "registration_postgres", "worker-1")


def test_data_is_dumped_in_the_service_container_to_a_file_then_fetched() -> None:
    item = located()
    dump, fetch, clean = plan_data_backup(item, Path("/b/registration/registration.sql"), STAMP).operations
    assert isinstance(dump, Run) and dump.node == "worker-1" and not dump.changes
    assert "label=com.docker.swarm.service.name=registration_postgres" in dump.command
    assert 'docker exec "$cid" sh -c \'umask 077; pgpass=$(mktemp)' in dump.command
    assert dump.command.endswith(f"> /root/.swarmlab/backup/{STAMP}-registration-registration.sql")
    assert isinstance(fetch, Fetch) and isinstance(clean, Run)


def test_data_is_restored_on_stdin_of_the_bundle_command() -> None:
    item = located()
    mkdir, upload, load = plan_data_restore(item, SQL, STAMP).operations
    assert isinstance(upload, Write) and upload.content == SQL and upload.mode == 0o600
    assert isinstance(load, Run) and load.changes and 'docker exec -i "$cid" sh -c' in load.command
    assert f"< {upload.path}; rc=$?; rm -f {upload.path}; exit $rc" in load.command
    assert isinstance(mkdir, Run) and not mkdir.changes


# --- the backup directory ------------------------------------------------------------------------------


def make_backup(root: Path, stamp: str = STAMP, cluster: str = "demo") -> Path:
    """A whole backup as `fab backup` leaves it: the swarm archive, a data file, the manifest last."""
    directory = root / stamp
    backups.create(directory)
    (directory / "swarm.tar.gz").write_bytes(swarm_archive(backups.archive_mark(cluster, stamp, "manager-2")))
    (directory / "registration").mkdir()
    (directory / "registration" / "registration.sql").write_bytes(SQL)
    manifest = backups.BackupManifest(
        cluster=cluster,
        created="2026-01-01T00:00:00+00:00",
        swarm=backups.SwarmPart(taken_on="manager-2", file=backups.saved(directory, "swarm.tar.gz")),
        data=(
            backups.DataPart(
                stack="registration",
                name="database",
                service="registration_postgres",
                file=backups.saved(directory, "registration/registration.sql"),
            ),
        ),
    )
    backups.write_manifest(directory, manifest)
    return directory


def test_a_whole_backup_verifies(tmp_path: Path) -> None:
    directory = make_backup(tmp_path / "backups")
    assert backups.verify(directory).data[0].name == "database"
    assert backups.latest(tmp_path / "backups", "demo") == directory
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700 and directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "manifest.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: (d / "registration" / "registration.sql").write_bytes(b"changed"), "is corrupt: 7 bytes"),
        (lambda d: (d / "registration" / "registration.sql").unlink(), "is missing from the backup"),
        (lambda d: (d / "manifest.json").unlink(), "has no manifest.json: the backup was interrupted"),
        (lambda d: (d / "manifest.json").write_text("{"), "is not a backup manifest"),
    ],
)
def test_a_damaged_backup_is_refused(tmp_path: Path, damage: object, problem: str) -> None:
    directory = make_backup(tmp_path)
    damage(directory)  # type: ignore[operator]
    with pytest.raises(BackupError, match=problem):
        backups.verify(directory)


def test_an_archive_that_is_not_a_swarm_directory_is_refused(tmp_path: Path) -> None:
    directory = make_backup(tmp_path)
    (directory / "swarm.tar.gz").write_bytes(b"not gzip")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["swarm"]["file"] = backups.saved(directory, "swarm.tar.gz").model_dump()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match=r"is not a readable tar\.gz archive"):
        backups.verify(directory)


def replace_archive(directory: Path, content: bytes) -> None:
    (directory / "swarm.tar.gz").write_bytes(content)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["swarm"]["file"] = backups.saved(directory, "swarm.tar.gz").model_dump()
    (directory / "manifest.json").write_text(json.dumps(manifest))


def link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize(
    ("archive", "problem"),
    [
        # The right name, a swarm/ with raft/, and a manifest that matches its digest: not ours.
        (swarm_archive(mark=None), "holds no swarmlab-backup.json: it is not an archive `fab backup` wrote"),
        (swarm_archive(mark=backups.archive_mark("other", STAMP, "manager-2")), "not the mark of a swarm backup"),
        (swarm_archive(mark=backups.archive_mark("demo", STAMP, "manager-1")), "taken on manager-2"),
        (swarm_archive(mark='{"made_by": "someone"}'), "not the mark of a swarm backup of cluster demo"),
        (swarm_archive(extra=link("swarm/raft/x", "/etc/shadow")), r"'swarm/raft/x' \(a link or a device\)"),
        (swarm_archive(extra=tarfile.TarInfo("swarm/../etc/cron.d/x")), "outside swarm/"),
        (swarm_archive(extra=tarfile.TarInfo("etc/passwd")), "outside swarm/"),
    ],
)
def test_a_foreign_swarm_archive_of_the_right_name_is_refused(tmp_path: Path, archive: bytes, problem: str) -> None:
    directory = make_backup(tmp_path)
    replace_archive(directory, archive)
    with pytest.raises(BackupError, match=problem):
        backups.verify(directory)


def test_no_backup_at_all_says_how_to_take_one(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"no backup of cluster demo in .*: take one with `fab backup`"):
        backups.latest(tmp_path / "backups", "demo")


# --- the tasks with the fake runner ----------------------------------------------------------------------


def swarm(tmp_path: Path, dry_run: bool = False, settings: dict[str, str] | None = None) -> tuple[FakeRunner, Session]:
    """The recorded swarm, of cluster demo, or of the cluster `settings` describe (cluster, cidr, ...)."""
    config = parse_config({"state_dir": str(tmp_path), **(settings or {})})
    runner = FakeRunner(lab_inventory(config, StatePaths(Path("/state"))))
    services = recorded("services")
    nodes = recorded("nodes")
    runner.answer(r"docker info --format '\{\{json .Swarm\}\}'", recorded("swarm_manager"))
    runner.answer(r"^ids=\$\(docker node ls -q\)", nodes)
    runner.answer(r"^ids=\$\(docker service ls -q\)", f"{services}\n---\n{nodes}")
    runner.answer(r"docker stack ls", "registration\n")
    runner.answer(r"systemd", "no")
    runner.remote_files[("manager-2", f"/root/.swarmlab/backup/{STAMP}-swarm.tar.gz")] = swarm_archive()
    runner.remote_files[("worker-1", f"/root/.swarmlab/backup/{STAMP}-registration-registration.sql")] = SQL
    runner.remote_files[("worker-2", f"/root/.swarmlab/backup/{STAMP}-registration-otp.rdb")] = RDB
    return runner, Session(config, StaticProvider(), runner, dry_run)


def test_backup_stops_a_non_leader_dumps_each_item_and_writes_a_verified_manifest(
    tmp_path: Path, fixed_stamp: None
) -> None:
    runner, session = swarm(tmp_path)
    directory = backup(session)
    assert directory == tmp_path / "static" / "demo" / "backups" / STAMP
    [stopped] = [c for c in runner.calls if "tar -C /var/lib/docker" in c.command]
    assert stopped.node == "manager-2"
    manifest = backups.verify(directory)
    assert manifest.swarm is not None and manifest.swarm.taken_on == "manager-2"
    assert [(d.name, d.file.path) for d in manifest.data] == [
        ("database", "registration/registration.sql"),
        ("otp-store", "registration/otp.rdb"),
    ]
    assert (directory / "registration" / "otp.rdb").read_bytes() == RDB
    assert {p.stat().st_mode & 0o777 for p in directory.rglob("*") if p.is_file()} == {0o600}
    assert session.timings.changed


def test_a_backup_that_fails_part_way_leaves_no_directory(tmp_path: Path, fixed_stamp: None) -> None:
    runner, session = swarm(tmp_path)
    runner.answer(r"redis-cli --askpass --rdb", "Error: Connection refused", exit_code=1, node="worker-2")
    with pytest.raises(CommandFailed, match=r"on worker-2: (.|\n)*Connection refused"):
        backup(session)
    assert not (tmp_path / "static" / "demo" / "backups" / STAMP).exists()


def test_a_dry_run_backup_makes_no_directory_and_stops_no_engine(tmp_path: Path, fixed_stamp: None) -> None:
    runner, session = swarm(tmp_path, dry_run=True)
    assert backup(session) is None
    assert not (tmp_path / "static" / "demo" / "backups").exists()
    assert not runner.commands(r"tar |pg_dump|redis-cli")


def test_restore_loads_each_item_into_its_service(tmp_path: Path) -> None:
    make_backup(tmp_path / "static" / "demo" / "backups")
    runner, session = swarm(tmp_path)
    restore(session)
    [(node, path)] = [key for key in runner.files]
    assert node == "worker-1" and runner.files[(node, path)] == SQL
    [load] = runner.commands(r"psql")
    assert f"< {path}" in load and "docker exec -i" in load and session.timings.changed


@pytest.mark.parametrize("corrupt", [True, False])
def test_restore_from_a_corrupt_or_missing_backup_changes_nothing(tmp_path: Path, corrupt: bool) -> None:
    directory = make_backup(tmp_path / "backups")
    if corrupt:
        (directory / "registration" / "registration.sql").write_bytes(b"DROP TABLE student;")
    runner, session = swarm(tmp_path)
    where = str(directory if corrupt else tmp_path / "elsewhere")
    with pytest.raises(BackupError, match="is corrupt" if corrupt else "does not exist"):
        restore(session, where)
    assert runner.calls == [] and runner.files == {}


def test_restore_of_a_stack_that_is_not_deployed_changes_nothing(tmp_path: Path) -> None:
    directory = make_backup(tmp_path / "from-h5a", cluster="h5a")
    runner, session = swarm(tmp_path, settings=CLUSTER_B)
    runner.answer(r"docker stack ls", "hello\n")
    with pytest.raises(
        BackupError,
        match=r"stack registration, which is not deployed on cluster h5b; nothing was changed\. "
        r"Fix: `fab deploy-stack --stack registration`, then restore again",
    ):
        restore(session, str(directory))
    assert runner.files == {} and not runner.commands("psql|redis-cli|mkdir")


# --- another cluster's backup into this one ------------------------------------------------------------

# Cluster B: another name, other addresses (another CIDR and overlay pool) than the backup's cluster h5a.
CLUSTER_B = {"cluster": "h5b", "cidr": "10.56.0.0/24", "overlay_pool": "10.156.0.0/16"}


def swapped_workers(nodes: str) -> str:
    """The recorded nodes with worker-1 and worker-3 swapped: B runs the task worker-1 ran on worker-3."""
    return (
        nodes.replace('"worker-1"', '"worker-x"')
        .replace('"worker-3"', '"worker-1"')
        .replace('"worker-x"', '"worker-3"')
    )


def test_another_clusters_backup_restores_into_this_one_on_its_own_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Copied from another machine: outside this cluster's state directory, taken on cluster h5a.
    directory = make_backup(tmp_path / "copied", cluster="h5a")
    runner, session = swarm(tmp_path, settings=CLUSTER_B)
    nodes = swapped_workers(recorded("nodes"))
    runner.answer(r"^ids=\$\(docker node ls -q\)", nodes)
    runner.answer(r"^ids=\$\(docker service ls -q\)", f"{recorded('services')}\n---\n{nodes}")
    restore(session, str(directory))
    assert "restoring a backup of cluster h5a into cluster h5b" in capsys.readouterr().out
    # The dump goes where B runs registration_postgres (worker-3 here), loaded there by B's own secret.
    [(node, path)] = list(runner.files)
    assert node == "worker-3" and runner.files[(node, path)] == SQL
    [load] = [c for c in runner.calls if "psql" in c.command]
    assert load.node == "worker-3" and "label=com.docker.swarm.service.name=registration_postgres" in load.command
    assert "PGPASSFILE" in load.command and "/run/secrets/db_password" in load.command
    assert {c.node for c in runner.calls} <= {n.name for n in session.inventory.nodes}
    assert str(session.inventory.node("worker-3").private_ip).startswith("10.56.0.")
    assert not runner.commands("h5a|10\\.55\\.") and session.timings.changed


def test_without_from_the_newest_backup_of_this_cluster_is_restored_never_another_clusters(tmp_path: Path) -> None:
    where = tmp_path / "static" / "h5b" / "backups"
    make_backup(where, "20260101T000000Z", cluster="h5b")
    make_backup(where, "20260301T000000Z", cluster="h5a")  # newer, but another cluster's
    assert backups.latest(where, "h5b") == where / "20260101T000000Z"
    with pytest.raises(BackupError, match=r"no backup of cluster h5c in .* \(it holds backups of h5a, h5b: name one"):
        backups.latest(where, "h5c")


def test_a_swarm_restore_of_another_clusters_backup_is_refused_before_anything(tmp_path: Path) -> None:
    directory = make_backup(tmp_path / "copied", cluster="h5a")
    runner, session = swarm(tmp_path, settings=CLUSTER_B)
    runner.answer(r"leader=yes", probe_answer(False, False))  # B lost its swarm state: would restore otherwise
    with pytest.raises(
        BackupRefused,
        match=r"is a backup of cluster h5a, and this is cluster h5b: a swarm's state \(its Raft log: h5a's node IDs, "
        r"addresses, certificates and root CA\) restores only into the cluster it was taken from\. .*"
        r"`fab restore --from .*copied/20260101T000000Z` without --swarm",
    ):
        flows.run(flows.RESTORE_SWARM, session, backup_dir=str(directory))
    assert runner.calls == [] and runner.files == {}


# --- the swarm state back --------------------------------------------------------------------------------


def test_a_swarm_restore_swaps_the_directory_with_the_engine_stopped_then_reforms() -> None:
    target = lab_inventory(parse_config({}), StatePaths(Path("/state"))).node("manager-2")
    plan = plan_swarm_restore(target, b"archive", False, STAMP)
    mkdir, upload, swap, engine, reform, leads, *rotations = plan.operations
    assert isinstance(upload, Write) and upload.content == b"archive" and upload.mode == 0o600
    stop, start = engine_commands(systemd=False)
    assert isinstance(swap, Run) and swap.command.startswith(f"{stop} && ")
    assert "mv /var/lib/docker/swarm /var/lib/docker/swarm.before-restore" in swap.command
    # Only swarm/ comes out of the archive (the mark stays in it).
    assert f"tar -C /var/lib/docker -xzf /root/.swarmlab/backup/{STAMP}-swarm.tar.gz swarm;" in swap.command
    assert f"rc=$?; {start} || rc=$?" in swap.command, "the engine starts again whatever tar did"
    assert isinstance(engine, Wait) and engine.verdict("locked").failed and engine.verdict("pending").done
    assert isinstance(reform, Run) and "--force-new-cluster --advertise-addr 10.20.0.12" in reform.command
    assert isinstance(leads, Wait) and len(rotations) == 2 and isinstance(mkdir, Run)


def probe_answer(leader: bool, in_swarm: bool) -> str:
    info = recorded("swarm_manager") if in_swarm else recorded("swarm_inactive")
    return f"{info}\n---\nleader={'yes' if leader else 'no'}\n---\n"


@pytest.mark.parametrize(
    ("leader", "in_swarm", "problem"),
    [(True, True, "the swarm has quorum"), (False, True, "still hold the swarm's state, newer than any backup")],
)
def test_a_swarm_restore_is_refused_while_a_manager_holds_swarm_state(
    tmp_path: Path, leader: bool, in_swarm: bool, problem: str
) -> None:
    directory = make_backup(tmp_path / "backups")
    runner, session = swarm(tmp_path)
    runner.answer(r"leader=yes", probe_answer(leader, in_swarm))
    with pytest.raises(BackupRefused, match=problem):
        flows.run(flows.RESTORE_SWARM, session, backup_dir=str(directory))
    assert not runner.commands(r"swarm init|swarm/join|tar |docker node rm") and runner.files == {}


def test_a_swarm_restore_of_a_backup_without_swarm_state_is_refused(tmp_path: Path) -> None:
    directory = make_backup(tmp_path / "backups")
    manifest = json.loads((directory / "manifest.json").read_text()) | {"swarm": None}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    runner, session = swarm(tmp_path)
    with pytest.raises(BackupError, match="holds no swarm state"):
        flows.run(flows.RESTORE_SWARM, session, backup_dir=str(directory))
    assert runner.calls == []


def test_a_dry_run_swarm_restore_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = make_backup(tmp_path / "backups")
    runner, session = swarm(tmp_path, dry_run=True)
    runner.answer(r"leader=yes", probe_answer(False, False))
    flows.run(flows.RESTORE_SWARM, session, backup_dir=str(directory))
    assert not runner.commands(r"swarm init|swarm/join|tar |docker node rm|systemctl|kill") and runner.files == {}
    out = capsys.readouterr().out
    assert "would change on manager-2: swarm re-formed on manager-2 from the backup" in out
    assert "would bring back worker-3" in out
