"""Docker secrets for a stack: created from values held in memory (stdin, never a command line),
named by a hash of their value so a changed password rolls the services onto a new secret."""

from __future__ import annotations

from collections.abc import Mapping

from cluster.credentials import secret_name
from cluster.inventory import Node
from cluster.progress import PhaseResult
from cluster.runners import Nodes

LIST_COMMAND = "docker secret ls --format '{{.Name}}'"


def ensure_secrets(
    nodes: Nodes, leader: Node, stack: str, values: Mapping[str, str], progress: PhaseResult
) -> dict[str, str]:
    existing = set(nodes.run(leader, LIST_COMMAND).stdout.split())
    names = {key: secret_name(stack, key, value) for key, value in values.items()}
    for key, name in names.items():
        if name not in existing:
            nodes.run(
                leader, f"docker secret create {name} - >/dev/null", stdin=values[key], secrets=tuple(values.values())
            )
            progress.changed(f"created Docker secret {name}")
    return names


def prune_secrets(nodes: Nodes, leader: Node, stack: str, keep: Mapping[str, str], progress: PhaseResult) -> None:
    """Remove this stack's older secret versions that no service uses any more."""
    current = set(keep.values())
    for name in nodes.run(leader, LIST_COMMAND).stdout.split():
        stale = name.startswith(f"{stack}_") and name not in current
        if stale and nodes.run(leader, f"docker secret rm {name}", check=False).ok:
            progress.changed(f"removed unused Docker secret {name}")
