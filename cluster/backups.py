"""Backups on the operator's machine: one timestamped directory per backup in the cluster's state
directory (mode 700, files 600), and a manifest written last, holding each file's size and SHA-256.

A directory without a manifest is an interrupted backup; a file whose size or digest differs from the
manifest is corrupt. Either is refused before a restore touches anything. The swarm archive carries
a mark of its own (ARCHIVE_MARK: who made it, for which cluster, on which manager), checked against
the manifest, and holds nothing but the swarm directory's files and directories: an archive that
merely has the right name and a swarm/ directory is refused before it reaches a manager.

A restore takes this cluster's newest backup (`latest`), or the directory named with --from, which may
be another cluster's (its data loads into this one; its swarm state does not).

`fab backup --keep N` prunes the older ones (cluster/plans/backup.py's plan_prune chooses from what
`survey` finds): only directories named as a backup's time whose manifest names this cluster and every
file they hold; anything else in the directory is left alone.
"""

from __future__ import annotations

import hashlib
import json
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
# Written beside swarm/ into the swarm archive by `fab backup`; never extracted on a manager.
ARCHIVE_MARK = "swarmlab-backup.json"
MADE_BY = "swarmlab backup"


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


class ArchiveMark(_Frozen):
    made_by: str
    version: int = 1
    cluster: str
    stamp: str
    taken_on: str


def archive_mark(cluster: str, stamp: str, taken_on: str) -> str:
    return ArchiveMark(made_by=MADE_BY, cluster=cluster, stamp=stamp, taken_on=taken_on).model_dump_json()


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


def latest(backups: Path, cluster: str) -> Path:
    """The newest backup of `cluster` in its backups directory (by name: the UTC time it was taken).
    Another cluster's backup copied there is restored only when named with --from."""
    entries = [e for e in survey(backups) if e.directory and e.cluster]
    found = [e.name for e in entries if e.cluster == cluster]
    if not found:
        others = sorted({e.cluster for e in entries} - {cluster})
        also = f" (it holds backups of {', '.join(others)}: name one with --from DIR)" if others else ""
        raise BackupError(
            f"no backup of cluster {cluster} in {backups}{also}: take one with `fab backup`, or name one with --from DIR"
        )
    return backups / max(found)


def verify(directory: Path) -> BackupManifest:
    """The backup's manifest, once every file it lists is present, whole, and readable as what it is."""
    if not directory.is_dir():
        raise BackupError(
            f"{directory} does not exist: name a backup directory (`fab backup` writes them in the state "
            "directory's backups/; one copied from another machine works too)"
        )
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
        _check_archive(directory / manifest.swarm.file.path, manifest.cluster, manifest.swarm.taken_on)
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


def _check_archive(path: Path, cluster: str, taken_on: str) -> None:
    """Our own archive of a swarm directory: its mark names this cluster and manager, and every other
    member is a plain file or directory under swarm/ (no link, device or path that climbs out)."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = archive.getmembers()
            mark = next((m for m in members if m.name == ARCHIVE_MARK and m.isfile()), None)
            handle = archive.extractfile(mark) if mark is not None else None
            text = handle.read(4096) if handle is not None else None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BackupError(f"{path} is not a readable tar.gz archive: {error}") from None
    if text is None:
        raise BackupError(
            f"{path} holds no {ARCHIVE_MARK}: it is not an archive `fab backup` wrote (or one from before "
            "archives were marked). Fix: restore from a backup taken with `fab backup`"
        )
    try:
        found = ArchiveMark.model_validate_json(text)
    except ValidationError:
        found = None
    if found is None or found.made_by != MADE_BY or (found.cluster, found.taken_on) != (cluster, taken_on):
        shown = json.dumps(text.decode(errors="replace"))[:200]
        raise BackupError(
            f"{path}'s {ARCHIVE_MARK} is {shown}, not the mark of a swarm backup of cluster {cluster} taken on "
            f"{taken_on} as the manifest says. Fix: restore from the backup directory `fab backup` made for it"
        )
    names = [m.name for m in members if m is not mark]
    if "swarm/raft" not in names:
        raise BackupError(f"{path} does not hold a swarm directory (swarm/raft)")
    for member in members:
        parts = member.name.split("/")
        if member is mark or (parts[0] == "swarm" and ".." not in parts and (member.isfile() or member.isdir())):
            continue
        what = "outside swarm/" if member.isfile() or member.isdir() else "a link or a device"
        raise BackupError(
            f"{path} holds {member.name!r} ({what}): a swarm backup holds only the swarm directory's files "
            "and directories. Fix: restore from a backup `fab backup` made"
        )


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
