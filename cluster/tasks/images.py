"""build-images: build a workload's images on the storage node and push them to the cluster registry.

No registry outside the cluster is needed: the provider supplies the Debian base image on the storage
node (the lab ships its local one; clouds and static machines debootstrap it there), and everything
else builds FROM it. Tags are input hashes, so an unchanged image is not rebuilt.
"""

from __future__ import annotations

from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.daemons import MACHINE
from cluster.facts.storage import registry_check
from cluster.images import base_image, workload_builds
from cluster.plans.images import ImageCache, pinned_refs, plan_builds, to_build
from cluster.session import Session
from cluster.wheelhouse import ensure_wheelhouse
from cluster.workload import REPO_ROOT, Workload

WHEEL_CACHE = REPO_ROOT / ".cache"


def build_images(session: Session, *workloads: Workload) -> dict[str, str]:
    """Build what is missing from the registry of the workloads' images, in one phase; return each
    image's pullable reference, pinned by its digest. Builds push to the registry's writable endpoint:
    the registry step comes first in every flow that builds."""
    inventory = session.inventory
    storage, registry = inventory.storage, inventory.registry
    if storage is None or registry is None:
        raise SwarmlabError("the inventory has no storage node: it builds the images and runs the registry")
    specs = [spec for workload in workloads for spec in workload.manifest.images]
    names = [spec.name for spec in specs]
    if len(set(names)) < len(names):
        clash = sorted({name for name in names if names.count(name) > 1})
        raise SwarmlabError(
            f"image name(s) {', '.join(clash)} appear in more than one of {', '.join(w.name for w in workloads)}: "
            "each image is built once under its name. Fix: rename the image in one bundle.yaml"
        )
    of = " and ".join(w.name for w in workloads)
    with session.phase("build-images", f"{len(specs)} image(s) of {of} on {storage.name}, pushed to {registry}") as p:
        base = base_image(session.config.debian_suite, session.config.debian_mirror)
        arch = read(session.runner, storage, MACHINE)
        builds = workload_builds(
            specs,
            base.tag,
            registry,
            lambda requirements: ensure_wheelhouse(REPO_ROOT / requirements, WHEEL_CACHE, arch, p),
        )
        cache = ImageCache(session.provider.image_cache) if session.provider.image_cache else None
        check = read(session.runner, storage, registry_check(builds, cache.path if cache else None))
        plan = plan_builds(storage.name, builds, check, cache)
        executor = session.executor()
        if to_build(builds, check):
            # Only a build needs the base image: images in the registry or in the image cache do not.
            session.provider.supply_base_image(executor, storage, base, p)
        executor.execute(plan, p)
        if plan.operations and not session.dry_run:
            # The digests of what was just pushed or copied, as the registry now holds them.
            check = read(session.runner, storage, registry_check(builds))
        return pinned_refs(builds, check, session.dry_run)
