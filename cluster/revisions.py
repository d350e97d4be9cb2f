"""Stack revisions on the operator's machine: what each deploy of a stack used, one file per revision in
the cluster's state directory, `<state>/revisions/<stack>/<number>.json` (directories 700, files 600).

A revision holds the rendered stack, the values, the images, the names of the Docker secrets and
configs it referenced, when, and whether the deploy succeeded; never a secret's value (the rendered
stack names secrets only, as external ones). `fab history` lists them, `fab rollback-stack` deploys one
again. Choosing, pruning and comparing revisions is pure (cluster/plans/revisions.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from cluster.errors import SwarmlabError
from cluster.state import StatePaths, private_dir, write_private

FILE = re.compile(r"^(\d{4,})\.json$")


class Revision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int
    stack: str
    time: str  # UTC, ISO 8601
    result: Literal["ok", "failed"]
    error: str = ""  # why a failed deploy failed (its first lines)
    rollback_of: int | None = None
    environment: str
    values: Any = None
    images: dict[str, str]  # service -> image reference, as in the rendered stack
    secrets: dict[str, str]  # bundle secret -> Docker secret name (never its value)
    configs: dict[str, str]  # bundle config -> Docker config name
    rendered: str  # the stack file that was deployed


def stack_dir(paths: StatePaths, stack: str) -> Path:
    return paths.revisions / stack


def load(paths: StatePaths, stack: str) -> list[Revision]:
    """The stack's recorded revisions, oldest first (none when it was never deployed from here)."""
    directory = stack_dir(paths, stack)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if not FILE.match(path.name):
            continue
        try:
            found.append(Revision.model_validate_json(path.read_text()))
        except (ValidationError, OSError) as error:
            raise SwarmlabError(
                f"{path} is not a readable revision ({error.__class__.__name__}): move it out of {directory}"
            ) from None
    return sorted(found, key=lambda r: r.number)


def save(paths: StatePaths, revision: Revision) -> Path:
    path = stack_dir(paths, revision.stack) / f"{revision.number:04d}.json"
    private_dir(path.parent)
    write_private(path, (revision.model_dump_json(indent=2) + "\n").encode())
    return path


def remove(paths: StatePaths, stack: str, numbers: list[int]) -> None:
    for number in numbers:
        (stack_dir(paths, stack) / f"{number:04d}.json").unlink(missing_ok=True)
