"""Stack revisions: record each deploy of a stack in the state directory, list them (`fab history`),
and pick the one `fab rollback-stack` deploys again, checking that the swarm still has every secret and
config version its stack file names. The deploy itself is deploy-stack's (cluster/flows.py composes
them); choosing, pruning and comparing are pure (cluster/plans/revisions.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from cluster import revisions as stored
from cluster.facts import read
from cluster.facts.listings import CONFIG_NAMES, SECRET_NAMES
from cluster.inventory import Node
from cluster.plans.revisions import (
    RevisionError,
    choose,
    history,
    missing_versions,
    next_number,
    same_as_newest,
    service_images,
    to_prune,
)
from cluster.progress import say
from cluster.revisions import Revision
from cluster.session import Session

ERROR_CHARS = 300  # of a failed deploy's error kept in its revision


@contextmanager
def recording(
    session: Session,
    *,
    stack: str,
    environment: str,
    values: Any,
    secrets: Mapping[str, str],
    configs: Mapping[str, str],
    rendered: str,
    rollback_of: int | None = None,
) -> Iterator[None]:
    """Record the deploy run inside as the stack's next revision, ok or failed (the failure goes on);
    then drop the oldest beyond `keep_revisions`. A dry run records nothing, and a deploy of exactly the
    newest revision's stack records no new one."""
    kept = stored.load(session.state, stack)
    number = next_number(kept)
    what = f" (rollback of {rollback_of})" if rollback_of is not None else ""
    if session.dry_run:
        yield
        say(f"    would record revision {number} of stack {stack}{what}")
        return
    draft = Revision(
        number=number,
        stack=stack,
        time="",
        result="ok",
        rollback_of=rollback_of,
        environment=environment,
        values=values,
        images=service_images(rendered),
        secrets=dict(secrets),
        configs=dict(configs),
        rendered=rendered,
    )
    try:
        yield
    except Exception as error:
        said = " / ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        _save(session, kept, draft.model_copy(update={"result": "failed", "error": said[:ERROR_CHARS]}))
        raise
    same = same_as_newest(kept, rendered)
    if same is not None:
        say(f"    stack {stack} is as revision {same.number} recorded it: no new revision")
        return
    _save(session, kept, draft)


def _save(session: Session, kept: list[Revision], revision: Revision) -> None:
    revision = revision.model_copy(update={"time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")})
    path = stored.save(session.state, revision)
    pruned = to_prune([*kept, revision], session.config.keep_revisions)
    stored.remove(session.state, revision.stack, pruned)
    dropped = f"; dropped the oldest: {', '.join(map(str, pruned))} (keep_revisions)" if pruned else ""
    say(f"    recorded revision {revision.number} of stack {revision.stack} ({revision.result}) in {path}{dropped}")


def chosen_revision(session: Session, stack: str, to: int | None, leader: Node) -> Revision:
    """The revision to deploy again, once the swarm is known to hold every secret and config it names."""
    revision = choose(stored.load(session.state, stack), to, stack)
    secrets = set(read(session.runner, leader, SECRET_NAMES))
    configs = set(read(session.runner, leader, CONFIG_NAMES))
    missing = missing_versions(revision, secrets, configs)
    if missing:
        raise RevisionError(
            f"revision {revision.number} of stack {stack} names versions the swarm no longer has: "
            f"{', '.join(missing)}. Nothing was changed. They were removed outside swarmlab (prune keeps what "
            f"a kept revision names); deploy the stack with `fab deploy-stack --stack {stack}` instead, or roll "
            "back to a newer revision (`fab history`)"
        )
    say(f"rolling stack {stack} back to revision {revision.number} of {revision.time}")
    return revision


def history_report(session: Session, stack: str) -> str:
    return history(stored.load(session.state, stack), stack, session.config.keep_revisions)
