"""Images for the lab, built on the local engine with no registry: a Debian base from debootstrap and
the node image made by running the provisioning scripts on it. Both are tagged by input hash."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
from docker.errors import BuildError, ImageNotFound

from cluster.config import Config
from cluster.errors import SwarmlabError, tail
from cluster.images import BuildContext, hash_strings
from cluster.progress import PhaseResult
from rendering.provision import ROLES, provision_script
from rendering.render import render

BASE_REPOSITORY = "swarmlab/debian"
NODE_REPOSITORY = "swarmlab/node"
BASE_VARIANT = "minbase"
# Paths the storage node exports (NFS) and every worker mounts at the same place in the lab.
EXPORT_ROOT = "/srv/swarmlab"
BASE_RECIPE_VERSION = "1"


def base_image_tag(config: Config) -> str:
    recipe = hash_strings(config.debian_suite, config.debian_mirror, BASE_VARIANT, BASE_RECIPE_VERSION)
    return f"{BASE_REPOSITORY}:{config.debian_suite}-{recipe}"


def _exists(engine: docker.DockerClient, tag: str) -> bool:
    try:
        engine.images.get(tag)
    except ImageNotFound:
        return False
    return True


def _host_run(command: list[str], hint: str = "") -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = (
            f"on localhost: `{' '.join(command)}` failed (exit {done.returncode}):\n{tail(done.stdout + done.stderr)}"
        )
        raise SwarmlabError(message + (f"\nHint: {hint}" if hint else ""))


def ensure_base_image(engine: docker.DockerClient, config: Config, progress: PhaseResult) -> str:
    """debootstrap a minimal Debian and `docker import` it, unless an image with the same recipe exists."""
    tag = base_image_tag(config)
    if _exists(engine, tag):
        progress.note(f"{tag} present")
        return tag
    if shutil.which("debootstrap") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SwarmlabError(
                "debootstrap is needed to build the Debian base image: install it (apt-get install debootstrap)"
            )
        _host_run(["apt-get", "update", "-q"])
        _host_run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap"])
        progress.changed("installed Debian's debootstrap")
    if os.geteuid() != 0:
        raise SwarmlabError("building the Debian base image with debootstrap needs root: run `make demo` with sudo")
    with tempfile.TemporaryDirectory(prefix="swarmlab-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        _host_run(
            ["debootstrap", f"--variant={BASE_VARIANT}", config.debian_suite, str(rootfs), config.debian_mirror],
            hint=f"check that {config.debian_mirror} is reachable (debian_mirror in swarmlab.yaml)",
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        archive = Path(scratch) / "rootfs.tar"
        _host_run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."])
        repository, version = tag.split(":")
        engine.api.import_image_from_file(str(archive), repository=repository, tag=version)
    progress.changed(f"built {tag} with debootstrap")
    return tag


def node_build_context(config: Config, base_tag: str) -> BuildContext:
    files: dict[str, bytes] = {
        "Dockerfile": render("lab/Dockerfile.j2", {"base_image": base_tag, "roles": ROLES}).encode(),
        "node-init.sh": render("lab/node-init.sh.j2", {"export_root": EXPORT_ROOT}).encode(),
    }
    for role in ROLES:
        files[f"provision/{role}.sh"] = provision_script(role, config.debian_mirror, config.debian_suite).encode()
    return BuildContext(files, {})


def ensure_node_image(engine: docker.DockerClient, config: Config, base_tag: str, progress: PhaseResult) -> str:
    context = node_build_context(config, base_tag)
    tag = f"{NODE_REPOSITORY}:{context.tag}"
    if _exists(engine, tag):
        progress.note(f"{tag} present")
        return tag
    try:
        engine.images.build(fileobj=io.BytesIO(context.tar()), custom_context=True, tag=tag, rm=True, forcerm=True)
    except BuildError as error:
        log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in error.build_log)
        raise SwarmlabError(f"building the lab node image {tag} failed: {error.msg}\n{tail(log)}") from None
    progress.changed(f"built {tag} from the provisioning scripts")
    return tag
