"""Images, pure: which of a workload's images the cluster registry lacks, and how to build them on
the storage node; and how the storage node makes the Debian base image itself (clouds, static)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from cluster.images import BaseImage, Build
from cluster.operations import Operation, Parallel, Plan, Run, Write
from registry.model import trust_path

REMOTE_DIR = "/var/tmp/swarmlab"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
BUILD_TIMEOUT = 900


def registry_check_command(builds: Sequence[Build], registry: str) -> str:
    """`name:tag yes|no` for each image, in one round trip to the storage node: over TLS, verified
    with the CA the engines trust for this registry."""
    refs = " ".join(f"{b.name}:{b.context.tag}" for b in builds)
    url = f"https://{registry}/v2/swarmlab/$name/manifests/$tag"
    return (
        f"for ref in {refs}; do name=${{ref%%:*}}; tag=${{ref#*:}}; "
        f"if curl -sf -o /dev/null --cacert {trust_path(registry)} -H 'Accept: {MANIFEST_V2}' {url}; "
        'then echo "$ref yes"; else echo "$ref no"; fi; done'
    )


def parse_registry_check(output: str) -> set[str]:
    """The `name:tag` references the registry has."""
    return {line.split()[0] for line in output.splitlines() if line.strip().endswith(" yes")}


def _levels(missing: Sequence[Build]) -> list[list[Build]]:
    """Builds grouped so that each group only needs images of earlier groups (or the registry)."""
    names = {b.name for b in missing}
    level: dict[str, int] = {}
    for build in missing:  # recipes list a base before what builds FROM it
        level[build.name] = level[build.base] + 1 if build.base in names and build.base else 0
    return [[b for b in missing if level[b.name] == n] for n in range(max(level.values(), default=-1) + 1)]


def plan_builds(storage: str, builds: Sequence[Build], present: set[str]) -> Plan:
    """Build and push every image the registry lacks: independent images at once, an image built
    FROM another after it. An image already in the registry is neither built nor pushed."""
    missing = [b for b in builds if b.key not in present]
    notes = tuple(f"{b.key} already in the registry" for b in builds if b.key in present)
    if not missing:
        return Plan(notes=notes)
    operations: list[Operation] = [Run(storage, f"mkdir -p {REMOTE_DIR}", "a scratch directory", changes=False)]
    for build in missing:
        operations.append(Write(storage, _remote(build), build.context.tar(), f"build context of {build.key}"))
    for group in _levels(missing):
        runs = tuple(_build_and_push(storage, b) for b in group)
        operations.append(runs[0] if len(runs) == 1 else Parallel(runs, f"build {len(runs)} images at once"))
    return Plan(tuple(operations), notes)


def _remote(build: Build) -> str:
    return f"{REMOTE_DIR}/{build.name}-{build.context.tag}.tar"


def _build_and_push(storage: str, build: Build) -> Run:
    args = " ".join(f"--build-arg {k}={shlex.quote(v)}" for k, v in sorted(build.context.build_args.items()))
    remote = _remote(build)
    return Run(
        storage,
        f"docker build -q -t {build.ref} {args} - < {remote} && docker push -q {build.ref}; "
        f"status=$?; rm -f {remote}; exit $status",
        f"built and pushed {build.key}",
        timeout=BUILD_TIMEOUT,
        hint="the build log tail is above",
    )


def base_present_command(base: BaseImage) -> str:
    return f"docker image inspect {base.tag} >/dev/null 2>&1 && echo yes || echo no"


def plan_base_on_node(node: str, base: BaseImage, present: bool) -> Plan:
    """Make the base image on the node itself with debootstrap (it needs Debian's mirror, nothing else)."""
    if present:
        return Plan(notes=(f"{base.tag} present on {node}",))
    script = f"{REMOTE_DIR}/debian-base.sh"
    return Plan(
        (
            Run(node, f"mkdir -p {REMOTE_DIR}", "a scratch directory", changes=False),
            Write(node, script, base.script.encode(), "the base image recipe", mode=0o755),
            Run(node, f"sh {script} {base.tag}", f"built {base.tag} with debootstrap on {node}", timeout=BUILD_TIMEOUT),
        )
    )
