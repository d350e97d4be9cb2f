"""A workload's Docker configs, pure: names from content, what to create, which old versions to prune,
and where each service mounts them.

Docker configs are immutable: a changed file gets a new name (a hash of its content), the stack file
points the services that mount it at the new name, and `docker stack deploy` rolls exactly those.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import topology
from cluster.errors import SwarmlabError
from cluster.operations import Plan, Run, Write
from cluster.workload import ConfigSpec

REMOTE_CONFIGS = f"{topology.NODE_WORK_DIR}/configs"
DIGEST_LENGTH = 12


def config_name(stack: str, key: str, content: str) -> str:
    """`<stack>_<key>_<sha256 of the content>`: configs are not secret, so a plain hash names them."""
    return f"{stack}_{key}_{hashlib.sha256(content.encode()).hexdigest()[:DIGEST_LENGTH]}"


def plan_configs(leader: str, contents: Mapping[str, str], existing: set[str]) -> Plan:
    """Create the configs (by name) that do not exist yet: the file goes over SFTP, then into Swarm."""
    operations: list[Write | Run] = []
    for name, content in contents.items():
        if name in existing:
            continue
        path = f"{REMOTE_CONFIGS}/{name}"
        if not operations:
            operations.append(Run(leader, f"mkdir -p {REMOTE_CONFIGS}", "a directory for config files", changes=False))
        operations.append(Write(leader, path, content.encode(), f"the content of config {name}"))
        operations.append(
            Run(
                leader,
                f"docker config create {name} {path} >/dev/null && rm -f {path}",
                f"created Docker config {name}",
            )
        )
    return Plan(tuple(operations))


def plan_prune_configs(leader: str, stack: str, keep: Sequence[str], existing: Sequence[str], in_use: set[str]) -> Plan:
    """Remove this stack's config versions that no service mounts any more (names this tool made only)."""
    ours = re.compile(rf"^{re.escape(stack)}_[a-z][a-z0-9_]*_[0-9a-f]{{{DIGEST_LENGTH}}}$")
    stale = [name for name in existing if ours.match(name) and name not in set(keep) | in_use]
    return Plan(
        tuple(Run(leader, f"docker config rm {name}", f"removed unused Docker config {name}") for name in stale)
    )


def config_mounts(configs: Sequence[ConfigSpec]) -> dict[str, list[dict[str, str]]]:
    """For each service, the configs it mounts, as a stack file's long syntax (`source`, `target`)."""
    mounts: dict[str, list[dict[str, str]]] = {}
    for config in configs:
        for service in config.services:
            mounts.setdefault(service, []).append({"source": config.name, "target": config.target})
    return mounts


def check_mounts(stack: Mapping[str, Any], configs: Sequence[ConfigSpec], names: Mapping[str, str], where: str) -> None:
    """The rendered stack mounts each config in exactly the services bundle.yaml names, and declares it
    as the external config of that name: a template that drifts from its bundle fails here, not in Swarm."""
    problems = []
    declared = {key: (value or {}).get("name") for key, value in (stack.get("configs") or {}).items()}
    for config in configs:
        using = sorted(
            service
            for service, spec in (stack.get("services") or {}).items()
            if any(
                (m.get("source") if isinstance(m, Mapping) else m) == config.name
                for m in (spec or {}).get("configs") or ()
            )
        )
        if using != sorted(config.services):
            problems.append(
                f"config {config.name}: bundle.yaml names {sorted(config.services)}, the stack mounts it in {using}"
            )
        if declared.get(config.name) != names.get(config.name):
            problems.append(f"config {config.name}: not declared as external config {names.get(config.name)}")
    if problems:
        raise SwarmlabError(f"{where}: the stack and its bundle disagree:\n" + "\n".join(f"- {p}" for p in problems))
