"""Backups on the operator's machine: one timestamped directory per backup in the cluster's state
directory (mode 700, files 600), and a manifest written last, holding each file's size and SHA-256.

A directory without a manifest is an interrupted backup; a file whose size or digest differs from the
manifest is corrupt. Either is refused before a restore touches anything.

`fab backup --keep N` prunes the older ones (cluster/plans/backup.py's plan_prune chooses from what
`survey` finds): only directories named as a backup's time whose manifest names this cluster and every
file they hold; anything else in the directory is left alone.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from cluster.errors import SwarmlabError
from cluster.state import write_private

MANIFEST = "manifest.json"
SWARM_ARCHIVE = "swarm.tar.gz"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


class BackupError(SwarmlabError):
    """A backup that cannot be used: missing, interrupted or corrupt. Nothing was changed."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SavedFile(_Frozen):
    path: str  # relative to the backup directory
    bytes: int
    sha256: str


class SwarmPart(_Frozen):
    taken_on: str  # the manager whose engine was stopped for it
    file: SavedFile


class DataPart(_Frozen):
    stack: str
    name: str  # the bundle's backup item
    service: str
    file: SavedFile


class BackupManifest(_Frozen):
    version: int = 1
    cluster: str
    created: str
    swarm: SwarmPart | None = None
    data: tuple[DataPart, ...] = ()


def stamp(now: datetime | None = None) -> str:
    """A backup's name: its UTC time."""
    return (now or datetime.now(UTC)).strftime(STAMP_FORMAT)


def create(directory: Path) -> None:
    """The backup's directory, private to its owner, as is the directory of backups."""
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.parent.chmod(0o700)
    directory.mkdir(mode=0o700)  # two backups in one second would collide: refused, not merged


def saved(directory: Path, relative: str) -> SavedFile:
    path = directory / relative
    return SavedFile(path=relative, bytes=path.stat().st_size, sha256=_sha256(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: BackupManifest) -> None:
    write_private(directory / MANIFEST, (manifest.model_dump_json(indent=2) + "\n").encode())


def discard(directory: Path) -> None:
    """An interrupted backup goes: a half-written directory must never be mistaken for a backup."""
    shutil.rmtree(directory, ignore_errors=True)


def latest(backups: Path) -> Path:
    found = sorted(p for p in backups.glob("*") if p.is_dir() and (p / MANIFEST).exists()) if backups.is_dir() else []
    if not found:
        raise BackupError(f"no backup in {backups}: take one with `fab backup`, or name one with --from DIR")
    return found[-1]


def verify(directory: Path) -> BackupManifest:
    """The backup's manifest, once every file it lists is present, whole, and readable as what it is."""
    if not directory.is_dir():
        raise BackupError(f"{directory} does not exist (backups are in the cluster's state directory)")
    path = directory / MANIFEST
    if not path.exists():
        raise BackupError(f"{directory} has no {MANIFEST}: the backup was interrupted or is not one")
    try:
        manifest = BackupManifest.model_validate_json(path.read_text())
    except ValidationError as error:
        raise BackupError(f"{path} is not a backup manifest: {error.errors()[0]['msg']}") from None
    for item in _files(manifest):
        _check(directory, item)
    if manifest.swarm is not None:
        _check_archive(directory / manifest.swarm.file.path)
    return manifest


def _check(directory: Path, item: SavedFile) -> None:
    path = directory / item.path
    if not path.resolve().is_relative_to(directory.resolve()):
        raise BackupError(f"{directory / MANIFEST} names {item.path}, outside the backup")
    if not path.is_file():
        raise BackupError(f"{path} is missing from the backup")
    size, digest = path.stat().st_size, _sha256(path)
    if size != item.bytes or digest != item.sha256:
        raise BackupError(
            f"{path} is corrupt: {size} bytes, sha256 {digest[:16]}..., but the manifest says "
            f"{item.bytes} bytes, sha256 {item.sha256[:16]}..."
        )


def _check_archive(path: Path) -> None:
    try:
        with tarfile.open(path, "r:gz") as archive:
            names = archive.getnames()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BackupError(f"{path} is not a readable tar.gz archive: {error}") from None
    if "swarm/raft" not in names or any(not (n == "swarm" or n.startswith("swarm/")) for n in names):
        raise BackupError(f"{path} does not hold a swarm directory (swarm/raft)")


@dataclass(frozen=True)
class Found:
    """An entry of the backups directory, as pruning sees it: whether it is a real directory (not a
    link), the cluster its manifest names ('' without a readable one), and the files it holds that its
    manifest does not name."""

    name: str
    directory: bool
    cluster: str = ""
    unlisted: tuple[str, ...] = ()


def survey(backups: Path) -> list[Found]:
    """Every entry of the backups directory (none if there is no directory yet), sorted by name."""
    if not backups.is_dir():
        return []
    found = []
    for entry in sorted(backups.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            found.append(Found(entry.name, directory=False))
            continue
        try:
            manifest = BackupManifest.model_validate_json((entry / MANIFEST).read_text())
        except (OSError, ValidationError, UnicodeDecodeError):
            found.append(Found(entry.name, directory=True))
            continue
        named = {MANIFEST} | {item.path for item in _files(manifest)}
        held = (p for p in entry.rglob("*") if p.is_symlink() or not p.is_dir())
        unlisted = tuple(sorted(str(p.relative_to(entry)) for p in held if str(p.relative_to(entry)) not in named))
        found.append(Found(entry.name, True, manifest.cluster, unlisted))
    return found


def _files(manifest: BackupManifest) -> list[SavedFile]:
    return ([manifest.swarm.file] if manifest.swarm else []) + [d.file for d in manifest.data]


def remove(directory: Path) -> None:
    """A backup pruned (plan_prune chose it: ours, whole, every file named by its manifest)."""
    shutil.rmtree(directory)
