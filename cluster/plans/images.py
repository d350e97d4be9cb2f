"""Images, pure: which of a workload's images the cluster registry lacks, and how to build them on
the storage node; and how the storage node makes the Debian base image itself (clouds, static)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.images import BaseImage, BuildContext
from cluster.operations import Operation, Plan, Run, Write
from topology import REGISTRY_PORT

REMOTE_DIR = "/var/tmp/swarmlab"
# The registry runs on the storage node itself, so the presence check asks it locally.
LOCAL_REGISTRY = f"127.0.0.1:{REGISTRY_PORT}"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
BUILD_TIMEOUT = 900


@dataclass(frozen=True)
class Build:
    """One image of a workload: its name, its context (hence its tag) and where it is pushed."""

    name: str
    context: BuildContext
    ref: str


def registry_check_command(builds: Sequence[Build]) -> str:
    """`name:tag yes|no` for each image, in one round trip to the storage node."""
    refs = " ".join(f"{b.name}:{b.context.tag}" for b in builds)
    url = f"http://{LOCAL_REGISTRY}/v2/swarmlab/$name/manifests/$tag"
    return (
        f"for ref in {refs}; do name=${{ref%%:*}}; tag=${{ref#*:}}; "
        f"if curl -sf -o /dev/null -H 'Accept: {MANIFEST_V2}' {url}; then echo \"$ref yes\"; "
        'else echo "$ref no"; fi; done'
    )


def parse_registry_check(output: str) -> set[str]:
    """The `name:tag` references the registry has."""
    return {line.split()[0] for line in output.splitlines() if line.strip().endswith(" yes")}


def plan_builds(storage: str, builds: Sequence[Build], present: set[str]) -> Plan:
    """Build and push, in order (a base before what builds FROM it), every image the registry lacks."""
    operations: list[Operation] = []
    notes: list[str] = []
    for build in builds:
        key = f"{build.name}:{build.context.tag}"
        if key in present:
            notes.append(f"{key} already in the registry")
            continue
        remote = f"{REMOTE_DIR}/{build.name}-{build.context.tag}.tar"
        args = " ".join(f"--build-arg {k}={shlex.quote(v)}" for k, v in sorted(build.context.build_args.items()))
        operations += [
            Write(storage, remote, build.context.tar(), f"build context of {key}"),
            Run(
                storage,
                f"docker build -q -t {build.ref} {args} - < {remote} && docker push -q {build.ref}; "
                f"status=$?; rm -f {remote}; exit $status",
                f"built and pushed {key}",
                timeout=BUILD_TIMEOUT,
                hint="the build log tail is above",
            ),
        ]
    if operations:
        operations.insert(0, Run(storage, f"mkdir -p {REMOTE_DIR}", "a scratch directory", changes=False))
    return Plan(tuple(operations), tuple(notes))


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
