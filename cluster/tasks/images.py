"""build-images: build the stack's images on the storage node and push them to the cluster registry.

No registry outside the cluster is needed: the Debian base image goes to the storage node over SSH,
everything else builds FROM it there. Tags are input hashes, so an unchanged image is not rebuilt.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from cluster.config import Config
from cluster.errors import SwarmlabError
from cluster.images import BuildContext, files_under
from cluster.inventory import Node
from cluster.lab.build import ensure_base_image
from cluster.lab.engine import client
from cluster.progress import PhaseResult, phase
from cluster.runners import Nodes
from cluster.stacks import ImageRecipe
from cluster.wheelhouse import ensure_wheelhouse

REPO_ROOT = Path(__file__).resolve().parents[2]
REMOTE_DIR = "/var/tmp/swarmlab"
# The registry runs on the storage node itself, so the presence check asks it locally.
LOCAL_REGISTRY = "127.0.0.1:5000"


def registry_ref(registry: str, name: str, tag: str) -> str:
    return f"{registry}/swarmlab/{name}:{tag}"


def recipe_context(recipe: ImageRecipe, build_args: dict[str, str], wheelhouse: Path | None = None) -> BuildContext:
    """Exactly the files the recipe names (and the wheelhouse, for the runtime image)."""
    files: dict[str, bytes] = {}
    for source, destination in recipe.sources:
        path = REPO_ROOT / source
        if path.is_dir():
            files.update(files_under(path, prefix=destination))
        else:
            files[destination] = path.read_bytes()
    if wheelhouse is not None:
        files.update(files_under(wheelhouse, prefix="wheelhouse/", exclude=(".complete",)))
    files["Dockerfile"] = (REPO_ROOT / recipe.dockerfile).read_bytes()
    return BuildContext(files, {**dict(recipe.build_args), **build_args})


def _ensure_base_on(nodes: Nodes, storage: Node, base_tag: str, progress: PhaseResult) -> None:
    if nodes.run(storage, f"docker image inspect {base_tag} >/dev/null 2>&1", check=False).ok:
        return
    with tempfile.TemporaryDirectory(prefix="swarmlab-base-") as scratch:
        archive = Path(scratch) / "base.tar.gz"
        with gzip.open(archive, "wb", compresslevel=1) as out:
            for chunk in client().images.get(base_tag).save(named=True):
                out.write(chunk)
        nodes.run(storage, f"mkdir -p {REMOTE_DIR}")
        nodes.put(storage, archive, f"{REMOTE_DIR}/base.tar.gz")
    nodes.run(storage, f"docker load -q -i {REMOTE_DIR}/base.tar.gz && rm -f {REMOTE_DIR}/base.tar.gz")
    progress.changed(f"copied base image {base_tag} to {storage.name}")


def _in_registry(nodes: Nodes, storage: Node, name: str, tag: str) -> bool:
    url = f"http://{LOCAL_REGISTRY}/v2/swarmlab/{name}/manifests/{tag}"
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    return nodes.run(storage, f"curl -sf -o /dev/null -H 'Accept: {accept}' {url}", check=False).ok


def _build_and_push(nodes: Nodes, storage: Node, context: BuildContext, ref: str) -> None:
    with tempfile.TemporaryDirectory(prefix="swarmlab-ctx-") as scratch:
        archive = Path(scratch) / "context.tar"
        archive.write_bytes(context.tar())
        remote = f"{REMOTE_DIR}/{ref.rsplit('/', 1)[-1].replace(':', '-')}.tar"
        nodes.run(storage, f"mkdir -p {REMOTE_DIR}")
        nodes.put(storage, archive, remote)
    args = " ".join(f"--build-arg {key}={value}" for key, value in sorted(context.build_args.items()))
    try:
        nodes.run(storage, f"docker build -q -t {ref} {args} - < {remote}", hint="the build log tail is above")
        nodes.run(storage, f"docker push -q {ref}")
    finally:
        nodes.run(storage, f"rm -f {remote}", check=False)


def build_images(nodes: Nodes, config: Config, recipes: tuple[ImageRecipe, ...]) -> dict[str, str]:
    """Build what is missing from the registry; return each recipe's pullable reference."""
    storage = nodes.inventory.storage
    if storage is None:
        raise SwarmlabError("the inventory has no storage node: it builds the images and runs the registry")
    registry = nodes.inventory.endpoints.get("registry", f"{storage.private_ip}:5000")
    refs: dict[str, str] = {}
    with phase("build-images", f"build {len(recipes)} image(s) on {storage.name}, push to {registry}") as p:
        base_tag = ensure_base_image(client(), config, p)
        _ensure_base_on(nodes, storage, base_tag, p)
        arch = nodes.run(storage, "uname -m").stdout.strip()
        for recipe in recipes:
            args = {"BASE_IMAGE": base_tag}
            if recipe.base:
                args["RUNTIME_IMAGE"] = refs[recipe.base]
            wheels = None
            if recipe.wheelhouse:
                wheels = ensure_wheelhouse(REPO_ROOT / recipe.wheelhouse, REPO_ROOT / ".cache", arch, p)
            context = recipe_context(recipe, args, wheels)
            refs[recipe.name] = registry_ref(registry, recipe.name, context.tag)
            if _in_registry(nodes, storage, recipe.name, context.tag):
                p.note(f"{recipe.name}:{context.tag} already in the registry")
                continue
            _build_and_push(nodes, storage, context, refs[recipe.name])
            p.changed(f"built and pushed {recipe.name}:{context.tag}")
    return refs
