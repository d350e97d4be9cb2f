"""The storage script's volume section against file-backed images: it formats an empty volume, and
never a volume that already holds a filesystem or anything else. SWARMLAB_DATA_NO_MOUNT=1 keeps it
from mounting, so no root, loop device or fstab is needed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rendering.provision import provision_script
from topology import DATA_ROOT

BEGIN, END = "# --- storage volume: begin ---", "# --- storage volume: end ---"
TOOLS = ("blkid", "mkfs.ext4", "sfdisk")


@pytest.fixture(autouse=True)
def tools() -> None:
    """Debian's tools, which `make check` installs: missing, the test fails (it is never skipped)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: `make check-tools` installs them (Debian: fdisk util-linux e2fsprogs)"
        )


SIZE = 8 * 1024 * 1024


def section() -> str:
    script = provision_script("storage")
    start, end = script.index(BEGIN), script.index(END)
    return script[start : end + len(END)] + "\n"


def run_section(device: Path | str | None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": f"/usr/sbin:/sbin:{os.environ.get('PATH', '/usr/bin:/bin')}", "SWARMLAB_DATA_NO_MOUNT": "1"}
    if device is not None:
        environment["SWARMLAB_DATA_DEVICE"] = str(device)
    environment |= env
    # sh -eu as in the full script (_common.sh.j2 sets -eu).
    return subprocess.run(
        ["sh", "-eu", "-c", section()], env=environment, capture_output=True, text=True, timeout=60, check=False
    )


def blank(path: Path) -> Path:
    with path.open("wb") as image:
        image.truncate(SIZE)
    return path


def probe(path: Path, tag: str) -> str:
    done = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", tag, str(path)], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_empty_volume_gets_formatted(tmp_path: Path) -> None:
    image = blank(tmp_path / "empty.img")
    done = run_section(image)
    assert done.returncode == 0, done.stderr
    assert probe(image, "TYPE") == "ext4" and probe(image, "LABEL") == "swarmlab-data"
    assert f"would mount UUID={probe(image, 'UUID')} (ext4) at {DATA_ROOT}" in done.stdout


def test_a_volume_with_a_filesystem_is_never_reformatted(tmp_path: Path) -> None:
    image = blank(tmp_path / "data.img")
    subprocess.run(["mkfs.ext4", "-q", "-L", "students", str(image)], check=True)
    uuid, before = probe(image, "UUID"), digest(image)
    for _ in range(2):  # and running it again changes nothing either
        done = run_section(image)
        assert done.returncode == 0, done.stderr
        assert "already has a filesystem: keeping it" in done.stdout
    assert probe(image, "UUID") == uuid and probe(image, "LABEL") == "students"
    assert digest(image) == before
    assert f"would mount UUID={uuid} (ext4)" in done.stdout


def test_a_volume_with_a_partition_table_is_left_alone(tmp_path: Path) -> None:
    image = blank(tmp_path / "partitioned.img")
    subprocess.run(["sfdisk", "-q", str(image)], input="label: dos\n,\n", text=True, check=True, capture_output=True)
    before = digest(image)
    done = run_section(image)
    assert done.returncode != 0
    assert "refusing to format or mount" in done.stderr
    assert digest(image) == before


def test_a_formatted_volume_then_empty_is_formatted_once(tmp_path: Path) -> None:
    image = blank(tmp_path / "fresh.img")
    assert run_section(image).returncode == 0
    uuid = probe(image, "UUID")
    assert run_section(image).returncode == 0
    assert probe(image, "UUID") == uuid


def test_a_missing_device_fails_loudly(tmp_path: Path) -> None:
    done = run_section(tmp_path / "absent", SWARMLAB_DATA_WAIT="0")
    assert done.returncode != 0
    assert "did not appear" in done.stderr


def test_no_device_means_nothing_to_do() -> None:
    # The lab image build runs the script without SWARMLAB_DATA_DEVICE.
    done = run_section(None)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_the_full_storage_script_keeps_its_provisioning_and_parses() -> None:
    script = provision_script("storage")
    assert "apt_install nfs-ganesha" in script and 'echo "provisioned role storage"' in script
    # The storage node builds the cluster's Debian base image itself (on clouds and static machines).
    assert " debootstrap" in script.split("apt_install nfs-ganesha", 1)[1].splitlines()[0]
    assert script.count(BEGIN) == 1 and script.index(BEGIN) < script.index(END)
    done = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
