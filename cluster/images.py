"""Image identity, pure: a build context is a set of files, and an image's tag is the hash of its inputs.

Tagging by input hash means an image is rebuilt only when something that goes into it changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cluster.archive import tar_bytes
from cluster.workload import REPO_ROOT, ImageSpec
from rendering.render import render

TAG_LENGTH = 12
IMAGE_NAMESPACE = "swarmlab"
BASE_REPOSITORY = "swarmlab/debian"
BASE_VARIANT = "minbase"
BASE_SCRIPT = "images/debian-base.sh.j2"


@dataclass(frozen=True)
class BuildContext:
    """Files of a docker build context (path inside the context -> content), plus build arguments."""

    files: Mapping[str, bytes]
    build_args: Mapping[str, str]
    # Where an input is fetched from (the cluster registry's address), not what it is: passed to the
    # build but left out of the tag, so an image has one tag in every cluster and the machine's image
    # cache serves every lab.
    location_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        for key in sorted(self.build_args):
            digest.update(f"arg:{key}={self.build_args[key]}".encode())
        return digest.hexdigest()[:TAG_LENGTH]

    @property
    def all_args(self) -> dict[str, str]:
        """What `docker build --build-arg` gets."""
        return {**self.build_args, **self.location_args}

    def tar(self) -> bytes:
        """A reproducible tar of the context (fixed mtimes and owners); scripts stay executable."""
        return tar_bytes(self.files, {name: 0o755 for name in self.files if name.endswith(".sh")})


def files_under(root: Path, prefix: str = "", exclude: Iterable[str] = ("__pycache__",)) -> dict[str, bytes]:
    """Every file below root, keyed by prefix + its relative path (skipping caches)."""
    skipped = set(exclude)
    found: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not skipped.intersection(relative.parts) and path.suffix != ".pyc":
            found[prefix + relative.as_posix()] = path.read_bytes()
    return found


def hash_strings(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:TAG_LENGTH]


def recipe_context(
    spec: ImageSpec, build_args: Mapping[str, str], wheelhouse: Path | None = None, root: Path = REPO_ROOT
) -> BuildContext:
    """Exactly the files the recipe names (and the wheelhouse, for an image that installs one)."""
    files: dict[str, bytes] = {}
    for source, destination in spec.sources.items():
        path = root / source
        if path.is_dir():
            files.update(files_under(path, prefix=destination))
        else:
            files[destination] = path.read_bytes()
    if wheelhouse is not None:
        files.update(files_under(wheelhouse, prefix="wheelhouse/", exclude=(".complete",)))
    files["Dockerfile"] = (root / spec.dockerfile).read_bytes()
    return BuildContext(files, {**spec.build_args, **build_args})


@dataclass(frozen=True)
class Build:
    """One image of a workload: its name, its context (hence its tag), where it is pushed, and the
    image of the same workload it builds FROM (if any)."""

    name: str
    context: BuildContext
    ref: str
    base: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.context.tag}"


def workload_builds(
    specs: Sequence[ImageSpec],
    base_tag: str,
    registry: str,
    wheelhouse: Callable[[str], Path | None],
    root: Path = REPO_ROOT,
) -> list[Build]:
    """Every image of a workload with its tag: an image's tag hashes its own files and build args,
    which include the name and tag of the image it builds FROM (its registry's address is passed
    apart, unhashed). A change to a file therefore rebuilds the images that contain it, and what
    builds FROM them, and nothing else; the same sources have the same tags in every cluster."""
    builds: list[Build] = []
    names: dict[str, str] = {}
    for spec in specs:
        args = {"BASE_IMAGE": base_tag}
        location: dict[str, str] = {}
        if spec.base:
            args["RUNTIME_IMAGE"] = names[spec.base]
            location["REGISTRY"] = registry
        files = recipe_context(spec, args, wheelhouse(spec.wheelhouse) if spec.wheelhouse else None, root)
        context = BuildContext(files.files, files.build_args, location)
        names[spec.name] = image_name(spec.name, context.tag)
        builds.append(Build(spec.name, context, f"{registry}/{names[spec.name]}", spec.base))
    return builds


def image_name(name: str, tag: str) -> str:
    """An image's name and tag in any registry: `swarmlab/NAME:TAG`."""
    return f"{IMAGE_NAMESPACE}/{name}:{tag}"


def registry_ref(registry: str, name: str, tag: str) -> str:
    return f"{registry}/{image_name(name, tag)}"


@dataclass(frozen=True)
class BaseImage:
    """The Debian base every image builds FROM: made by one script, tagged by a hash of that script."""

    suite: str
    script: str

    @property
    def tag(self) -> str:
        return f"{BASE_REPOSITORY}:{self.suite}-{hash_strings(self.script)}"


def base_image(suite: str, mirror: str) -> BaseImage:
    return BaseImage(suite, render(BASE_SCRIPT, {"suite": suite, "mirror": mirror, "variant": BASE_VARIANT}))
