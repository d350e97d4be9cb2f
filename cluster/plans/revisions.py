"""Stack revisions, pure: what a deploy records, which revision a rollback deploys, which revisions
retention drops, which secret and config versions the kept ones still need, and what changed from one
revision to the next (cluster/revisions.py stores them)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import yaml

from cluster.errors import SwarmlabError
from cluster.revisions import Revision

SHOWN_CHANGES = 4  # value changes listed per revision before "and N more"
SHOWN_VALUE = 24  # characters of a value shown in a change


class RevisionError(SwarmlabError):
    """No revision to roll back to, or one that cannot be deployed: nothing was changed."""


def service_images(rendered: str) -> dict[str, str]:
    """Each service of a rendered stack and its image reference."""
    services = (yaml.safe_load(rendered) or {}).get("services") or {}
    return {name: str((spec or {}).get("image", "")) for name, spec in services.items()}


def next_number(revisions: Sequence[Revision]) -> int:
    """Numbers only grow: a pruned revision's number is never given again."""
    return max((r.number for r in revisions), default=0) + 1


def same_as_newest(revisions: Sequence[Revision], rendered: str) -> Revision | None:
    """The newest revision when it deployed exactly this stack, and did so: a deploy that changes
    nothing records no new revision (history lists changes, not runs)."""
    if revisions and revisions[-1].rendered == rendered and revisions[-1].result == "ok":
        return revisions[-1]
    return None


def to_prune(revisions: Sequence[Revision], keep: int) -> list[int]:
    """The numbers of all but the newest `keep` revisions."""
    numbers = sorted(r.number for r in revisions)
    return numbers[: max(len(numbers) - keep, 0)]


def retained_names(revisions: Sequence[Revision]) -> set[str]:
    """The Docker secret and config names some kept revision refers to: prune keeps them, so that
    rolling back to any revision in the history finds what its stack file names."""
    return {name for r in revisions for name in (*r.secrets.values(), *r.configs.values())}


def _numbers(revisions: Sequence[Revision]) -> str:
    return ", ".join(str(r.number) for r in revisions)


def choose(revisions: Sequence[Revision], to: int | None, stack: str) -> Revision:
    """The revision `rollback-stack` deploys: `to`, or by default the newest one before the newest that
    deployed ok and differs from it (so a second rollback goes back again, as `kubectl rollout undo`)."""
    if not revisions:
        raise RevisionError(
            f"stack {stack} has no recorded revision in this state directory: revisions are recorded by "
            "`fab deploy-stack` (and the demo); deploy it first"
        )
    if to is None:
        current = revisions[-1]
        earlier = [r for r in revisions[:-1] if r.result == "ok" and r.rendered != current.rendered]
        if not earlier:
            raise RevisionError(
                f"stack {stack} has no revision before {current.number} that deployed ok and differs from it "
                f"(recorded: {_numbers(revisions)}); see `fab history --stack {stack}`"
            )
        return earlier[-1]
    chosen = [r for r in revisions if r.number == to]
    if not chosen:
        raise RevisionError(
            f"stack {stack} has no revision {to} (recorded: {_numbers(revisions)}; older ones were pruned, "
            f"see keep_revisions); pick one of those with --to"
        )
    if chosen[0].result != "ok":
        raise RevisionError(
            f"revision {to} of stack {stack} failed to deploy ({chosen[0].error or 'no error recorded'}); "
            f"roll back to one that deployed ok (`fab history --stack {stack}`)"
        )
    return chosen[0]


def missing_versions(revision: Revision, secrets: Collection[str], configs: Collection[str]) -> list[str]:
    """The Docker secrets and configs the revision's stack names that the swarm no longer has."""
    return [f"secret {name}" for name in sorted(revision.secrets.values()) if name not in secrets] + [
        f"config {name}" for name in sorted(revision.configs.values()) if name not in configs
    ]


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, Mapping) and values:
        found: dict[str, Any] = {}
        for key, value in values.items():
            found |= _flatten(value, f"{prefix}{key}.")
        return found
    return {prefix.removesuffix("."): values} if prefix else {}


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= SHOWN_VALUE else text[: SHOWN_VALUE - 3] + "..."


def _changed_keys(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def changes(before: Revision | None, after: Revision) -> str:
    """What changed from `before` to `after`, on one line: values, images, secrets, configs, and the
    services whose spec changed otherwise."""
    if before is None:
        return "first recorded"
    parts = []
    old, new = _flatten(before.values), _flatten(after.values)
    values = [f"{k} {_short(old.get(k))}->{_short(new.get(k))}" for k in _changed_keys(old, new)]
    if values:
        more = f" and {len(values) - SHOWN_CHANGES} more" if len(values) > SHOWN_CHANGES else ""
        parts.append("values: " + ", ".join(values[:SHOWN_CHANGES]) + more)
    for what, old_names, new_names in (
        ("images", before.images, after.images),
        ("secrets", before.secrets, after.secrets),
        ("configs", before.configs, after.configs),
    ):
        keys = _changed_keys(old_names, new_names)
        if keys:
            parts.append(f"{what} changed: {', '.join(keys)}")
    old_services = (yaml.safe_load(before.rendered) or {}).get("services") or {}
    new_services = (yaml.safe_load(after.rendered) or {}).get("services") or {}
    added = sorted(new_services.keys() - old_services.keys())
    removed = sorted(old_services.keys() - new_services.keys())
    respec = sorted(
        name
        for name in old_services.keys() & new_services.keys()
        if {**(old_services[name] or {}), "image": ""} != {**(new_services[name] or {}), "image": ""}
    )
    for what, names in (("services added", added), ("removed", removed), ("spec changed", respec)):
        if names:
            parts.append(f"{what}: {', '.join(names)}")
    return "; ".join(parts) or "no change in the stack"


def _image(reference: str) -> str:
    """`registry:5000/swarmlab/app:0123456789abcdef` as `app:0123456789ab`."""
    name, _, tag = reference.rpartition("/")[2].partition(":")
    return f"{name}:{tag[:12]}" if tag else name


def history(revisions: Sequence[Revision], stack: str, keep: int) -> str:
    """`fab history`: each revision, oldest first, with its images and what changed since the one before."""
    if not revisions:
        return f"# stack {stack}: no revision recorded in this state directory (`fab deploy-stack` records them)"
    lines = [f"# stack {stack}: {len(revisions)} revision(s) kept (keep_revisions: {keep})"]
    for before, revision in zip((None, *revisions[:-1]), revisions, strict=True):
        what = f"rollback of {revision.rollback_of}; " if revision.rollback_of is not None else ""
        changed = "earliest kept" if before is None and revision.number > 1 else changes(before, revision)
        lines.append(f"{revision.number:>4}  {revision.time}  {revision.result:<6}  {what}{changed}")
        lines.append(f"      images: {' '.join(sorted({_image(i) for i in revision.images.values()}))}")
        if revision.error:
            lines.append(f"      error: {revision.error}")
    return "\n".join(lines)
