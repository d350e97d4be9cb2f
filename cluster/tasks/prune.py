"""prune: after a deploy, and once HAProxy routes the new versions, remove the stack's Docker secret and
config versions that no service uses any more (each name is a hash of its content, so every change
leaves the old version behind), except those a kept revision of the stack names: `fab rollback-stack`
deploys a revision's stack file again, and it must find them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cluster import revisions
from cluster.facts import read
from cluster.facts.listings import CONFIG_NAMES, CONFIGS_IN_USE, SECRET_NAMES, SECRETS_IN_USE
from cluster.inventory import Node
from cluster.plans.configs import plan_prune_configs
from cluster.plans.revisions import retained_names
from cluster.plans.stack import plan_prune_secrets
from cluster.session import Session
from cluster.workload import Workload


def prune_unused(
    session: Session, workload: Workload, leader: Node, secrets: Mapping[str, str], configs: Sequence[str]
) -> None:
    """Remove the versions of `workload`'s secrets and configs other than `secrets` and `configs` (the
    names its stack now refers to) that no service uses."""
    runner, name = session.runner, workload.name
    # Versions a kept revision names count as used: a rollback to that revision finds them.
    retained = retained_names(revisions.load(session.state, name))
    with session.phase("prune-secrets", "remove secret versions no service or kept revision uses") as p:
        listed = read(runner, leader, SECRET_NAMES)
        in_use = set(read(runner, leader, SECRETS_IN_USE)) | retained
        session.executor().execute(plan_prune_secrets(leader.name, name, secrets, listed, in_use), p)
    if workload.manifest.configs:
        with session.phase("prune-configs", "remove config versions no service or kept revision uses") as p:
            listed = read(runner, leader, CONFIG_NAMES)
            in_use = set(read(runner, leader, CONFIGS_IN_USE)) | retained
            session.executor().execute(plan_prune_configs(leader.name, name, configs, listed, in_use), p)
