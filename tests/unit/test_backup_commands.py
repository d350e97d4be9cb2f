"""The bundles' backup and restore commands, run by a real shell against stand-ins for the database
and Redis clients: a password reaches them in a file or on stdin, never in the environment or an argv."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cluster.workload import BackupSpec, load_workload

PASSWORD = "pa:ss\\word-Zq9"  # a `:` and a `\`: what a password file must escape
FORBIDDEN = re.compile(r"PGPASSWORD|REDISCLI_AUTH|--pass|\s-a\s|password=")
# A stand-in client: records its argv, environment and stdin, and (pg) the password file it was given.
STAND_IN = """#!/bin/sh
printf '%s\\n' "$0" "$@" > "$RECORD/$(basename "$0").argv"
env > "$RECORD/$(basename "$0").env"
cat > "$RECORD/$(basename "$0").stdin"
if [ -n "$PGPASSFILE" ]; then cat "$PGPASSFILE" > "$RECORD/pgpass"; stat -c %a "$PGPASSFILE" > "$RECORD/pgpass.mode"; fi
[ "$1" = --askpass ] && [ "$2" = FLUSHALL ] && echo OK
[ "$2" = --rdb ] && echo RDB > "$3"
exit 0
"""


def backups() -> dict[str, BackupSpec]:
    return {spec.name: spec for spec in load_workload("registration", "lab").manifest.backups}


def run(tmp_path: Path, command: str, secret: str, stdin: str = "") -> Path:
    """Run a bundle command with its secret file moved under tmp_path and stand-ins on PATH."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    for name in ("pg_dump", "psql", "redis-cli"):
        (bin_dir / name).write_text(STAND_IN)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "secret").write_text(PASSWORD)
    command = command.replace(f"/run/secrets/{secret}", str(tmp_path / "secret")).replace(
        "/tmp/backup.rdb", str(tmp_path / "rdb")
    )
    (tmp_path / "tmp").mkdir()
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "RECORD": str(record),
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    done = subprocess.run(
        ["sh", "-c", command], input=stdin, capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return record


@pytest.mark.parametrize("item", ["database", "otp-store"])
def test_no_backup_command_puts_a_password_in_the_environment_or_an_argv(item: str) -> None:
    spec = backups()[item]
    assert not FORBIDDEN.search(spec.dump) and not FORBIDDEN.search(spec.restore)


@pytest.mark.parametrize("which", ["dump", "restore"])
def test_the_database_password_goes_in_a_private_password_file(tmp_path: Path, which: str) -> None:
    spec = backups()["database"]
    record = run(tmp_path, getattr(spec, which), "db_password", stdin="SELECT 1;\n")
    tool = "pg_dump" if which == "dump" else "psql"
    assert (record / "pgpass").read_text() == "*:*:*:*:pa\\:ss\\\\word-Zq9"
    assert (record / "pgpass.mode").read_text().strip() == "600"
    assert PASSWORD not in (record / f"{tool}.argv").read_text() + (record / f"{tool}.env").read_text()
    if which == "restore":
        assert (record / "psql.stdin").read_text() == "SELECT 1;\n", "the dump still reaches psql on stdin"
    assert not list((tmp_path / "tmp").iterdir()), "the password file is removed when the command ends"


def test_the_redis_password_goes_on_redis_clis_stdin(tmp_path: Path) -> None:
    record = run(tmp_path, backups()["otp-store"].dump, "redis_password")
    argv = (record / "redis-cli.argv").read_text().splitlines()
    assert argv[1:] == ["--askpass", "--rdb", str(tmp_path / "rdb")]
    assert (record / "redis-cli.stdin").read_text() == PASSWORD
    assert PASSWORD not in (record / "redis-cli.env").read_text()
