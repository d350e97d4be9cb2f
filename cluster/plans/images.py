"""Images, pure: which of a workload's images the cluster registry lacks, where each comes from (the
machine's image cache, else a build on the storage node), the references a stack pulls them by (pinned
by digest), and how the storage node makes the Debian base image itself (clouds, static).

Everything the storage node writes into the registry (a build's push, a copy from the image cache)
goes through the registry's writable endpoint on its loopback (`push_ref`); the public endpoint every
engine pulls from (`Build.ref`) is read-only."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.errors import SwarmlabError
from cluster.facts.storage import RegistryCheck
from cluster.images import BaseImage, Build, image_name
from cluster.operations import Operation, Parallel, Plan, Run, Write
from registry.model import PUSH_ENDPOINT, PUSH_LOG, PUSH_UNIT

REMOTE_DIR = "/var/tmp/swarmlab"
BUILD_TIMEOUT = 900
COPY_TIMEOUT = 300


@dataclass(frozen=True)
class ImageCache:
    """A directory on the storage node that outlives the cluster registry (the lab mounts one volume of
    the machine's into every lab): one skopeo `dir:` copy per image, named by its name and input tag,
    so any cluster's registry can be filled from it without building. Copies keep the compressed
    layers and the manifest as they are (same digests), and nothing is recompressed."""

    path: str

    def entry(self, build: Build) -> str:
        return f"{self.path}/{build.name}-{build.context.tag}"


def to_build(builds: Sequence[Build], check: RegistryCheck) -> list[Build]:
    """The images neither the registry nor the image cache has: only these need a build."""
    return [b for b in builds if b.key not in check.present and b.key not in check.cached]


def _levels(missing: Sequence[Build]) -> list[list[Build]]:
    """Builds grouped so that each group only needs images of earlier groups (or the registry)."""
    names = {b.name for b in missing}
    level: dict[str, int] = {}
    for build in missing:  # recipes list a base before what builds FROM it
        level[build.name] = level[build.base] + 1 if build.base in names and build.base else 0
    return [[b for b in missing if level[b.name] == n] for n in range(max(level.values(), default=-1) + 1)]


def plan_builds(storage: str, builds: Sequence[Build], check: RegistryCheck, cache: ImageCache | None = None) -> Plan:
    """Fill the registry with every image it lacks: from the image cache when it has the image (a
    copy, seconds), else built and pushed (independent images at once, an image built FROM another
    after it). What the registry has and the cache lacks (built before the cache, or a cleared cache)
    is kept in the cache for the next cluster, as what is built here is."""
    notes = tuple(f"{b.key} already in the registry" for b in builds if b.key in check.present)
    built = to_build(builds, check)
    copied = [b for b in builds if b.key not in check.present and b not in built]
    kept = [b for b in builds if b.key in check.present and b.key not in check.cached] if cache else []
    operations: list[Operation] = []
    if cache:
        runs = tuple(_from_cache(storage, b, cache) for b in copied) + tuple(
            Run(storage, _keep_in_cache(b, cache), f"kept {b.key} in the image cache", timeout=COPY_TIMEOUT)
            for b in kept
        )
        if runs:
            operations.append(runs[0] if len(runs) == 1 else Parallel(runs, "copy between registry and cache"))
    if built:
        operations.append(Run(storage, f"mkdir -p {REMOTE_DIR}", "a scratch directory", changes=False))
    for build in built:
        operations.append(Write(storage, _remote(build), build.context.tar(), f"build context of {build.key}"))
    for group in _levels(built):
        runs = tuple(_build_and_push(storage, b, cache) for b in group)
        operations.append(runs[0] if len(runs) == 1 else Parallel(runs, f"build {len(runs)} images at once"))
    return Plan(tuple(operations), notes)


def _remote(build: Build) -> str:
    return f"{REMOTE_DIR}/{build.name}-{build.context.tag}.tar"


def push_ref(build: Build) -> str:
    """Where the storage node pushes an image: the registry's writable endpoint, on its loopback."""
    return f"{PUSH_ENDPOINT}/{image_name(build.name, build.context.tag)}"


def pinned_refs(builds: Sequence[Build], check: RegistryCheck, dry_run: bool = False) -> dict[str, str]:
    """Each image's pullable reference pinned by the digest the registry holds for its tag
    (`<registry>/swarmlab/NAME:TAG@sha256:...`): an engine pulls exactly that manifest, whatever the tag
    names later. A dry run has not built what is missing: those go by tag."""
    missing = [b.key for b in builds if not check.digests.get(b.key)]
    if missing and not dry_run:
        raise SwarmlabError(
            f"the registry has no manifest digest for {', '.join(missing)} after the build and push "
            f"(asked on {PUSH_ENDPOINT} on the storage node). Fix: run `fab build-images` again; the storage "
            f"node's {PUSH_LOG} (lab) or `journalctl -u {PUSH_UNIT}` says what the registry did"
        )
    return {b.name: f"{b.ref}@{check.digests[b.key]}" if check.digests.get(b.key) else b.ref for b in builds}


# The loopback endpoint serves plain HTTP (nothing crosses the network): skopeo must be told so.
def _from_cache(storage: str, build: Build, cache: ImageCache) -> Run:
    return Run(
        storage,
        f"skopeo copy -q --dest-tls-verify=false dir:{cache.entry(build)} docker://{push_ref(build)}",
        f"copied {build.key} from the image cache to the registry (not built)",
        timeout=COPY_TIMEOUT,
    )


def _keep_in_cache(build: Build, cache: ImageCache) -> str:
    """Copy a pushed image into the cache: into a scratch name first, renamed when complete, so a
    cluster reading the cache at the same time never sees half a copy."""
    entry = cache.entry(build)
    scratch = f"{entry}.partial-$$"
    return (
        f"mkdir -p {cache.path} && rm -rf {scratch} && "
        f"skopeo copy -q --src-tls-verify=false docker://{push_ref(build)} dir:{scratch} && "
        f"{{ mv -T {scratch} {entry} 2>/dev/null || rm -rf {scratch}; }}"
    )


def _build_and_push(storage: str, build: Build, cache: ImageCache | None) -> Run:
    args = " ".join(f"--build-arg {k}={shlex.quote(v)}" for k, v in sorted(build.context.all_args.items()))
    remote = _remote(build)
    keep = f" && {_keep_in_cache(build, cache)}" if cache else ""
    return Run(
        storage,
        f"docker build -q -t {push_ref(build)} {args} - < {remote} && docker push -q {push_ref(build)}{keep}; "
        f"status=$?; rm -f {remote}; exit $status",
        f"built and pushed {build.key}" + (" (and kept in the image cache)" if cache else ""),
        timeout=BUILD_TIMEOUT,
        hint="the build log tail is above",
    )


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
