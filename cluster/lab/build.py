"""Images for the lab, built on the local engine with no registry: the Debian base (the same
debootstrap script a storage node runs) and the node image made by running the provisioning scripts
on it. Both are tagged by input hash."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import docker
from docker.errors import BuildError, ImageNotFound

import keepalived.model as keepalived
import topology
from cluster.config import Config
from cluster.errors import SwarmlabError, tail
from cluster.images import BaseImage, BuildContext, base_image
from cluster.local import run_local
from cluster.progress import PhaseResult
from nfs import model as nfs
from registry import model as registry
from rendering.provision import ROLES, provision_script
from rendering.render import render

NODE_REPOSITORY = "swarmlab/node"


def _exists(engine: docker.DockerClient, tag: str) -> bool:
    try:
        engine.images.get(tag)
    except ImageNotFound:
        return False
    return True


def ensure_base_image(engine: docker.DockerClient, config: Config, progress: PhaseResult) -> BaseImage:
    """Run the base image recipe here, unless an image of the same recipe exists."""
    base = base_image(config.debian_suite, config.debian_mirror)
    if _exists(engine, base.tag):
        progress.note(f"{base.tag} present")
        return base
    if os.geteuid() != 0:
        raise SwarmlabError("building the Debian base image with debootstrap needs root: run `make demo` with sudo")
    with tempfile.TemporaryDirectory(prefix="swarmlab-base-") as scratch:
        script = Path(scratch) / "debian-base.sh"
        script.write_text(base.script)
        run_local(
            ["sh", str(script), base.tag],
            hint=f"check that {config.debian_mirror} is reachable (debian_mirror in swarmlab.yaml)",
        )
    progress.changed(f"built {base.tag} with debootstrap")
    return base


def node_build_context(config: Config, base_tag: str) -> BuildContext:
    files: dict[str, bytes] = {
        "Dockerfile": render("lab/Dockerfile.j2", {"base_image": base_tag, "roles": ROLES}).encode(),
        "node-init.sh": render(
            "lab/node-init.sh.j2",
            {
                "export_root": topology.DATA_ROOT,
                "swarm_dir": topology.SWARM_DIR,
                "ganesha_run_dir": topology.GANESHA_RUN_DIR,
                "ganesha_pid": nfs.PID_FILE,
                "registry_data_dir": registry.DATA_DIR,
                "registry_cert": registry.CERT_PATH,
                "registry_pid": registry.PID_FILE,
                "registry_start": registry.START,
                "registry_push_pid": registry.PUSH_PID_FILE,
                "registry_push_config": registry.PUSH_CONFIG_PATH,
                "registry_push_start": registry.PUSH_START,
                "isolation_script": topology.ISOLATION_SCRIPT,
                # Two lbs: keepalived starts where its configuration is, as Debian's unit does at boot.
                "keepalived": config.lb_count == 2,
                "keepalived_config": keepalived.CONFIG_PATH,
                "keepalived_pid": keepalived.PID_FILE,
                "keepalived_start": keepalived.DAEMON.start,
            },
        ).encode(),
    }
    # A lab of two lbs has keepalived in its image (the lb script installs it) and node-init starts it:
    # an image of its own (other inputs, another tag). One lb's image is byte for byte the one before,
    # so labs of one lb keep theirs and no one rebuilds for a package only pairs use.
    for role in ROLES:
        files[f"provision/{role}.sh"] = provision_script(
            role, config.debian_mirror, config.debian_suite, lb_count=config.lb_count
        ).encode()
    return BuildContext(files, {})


def ensure_node_image(engine: docker.DockerClient, config: Config, base_tag: str, progress: PhaseResult) -> str:
    context = node_build_context(config, base_tag)
    return ensure_built(
        engine,
        NODE_REPOSITORY,
        context,
        what="the lab node image",
        how="from the provisioning scripts",
        progress=progress,
    )


def ensure_built(
    engine: docker.DockerClient, repository: str, context: BuildContext, *, what: str, how: str, progress: PhaseResult
) -> str:
    """`repository:<the context's tag>`, built on the local engine unless an image of the same inputs exists."""
    tag = f"{repository}:{context.tag}"
    if _exists(engine, tag):
        progress.note(f"{tag} present")
        return tag
    try:
        engine.images.build(fileobj=io.BytesIO(context.tar()), custom_context=True, tag=tag, rm=True, forcerm=True)
    except BuildError as error:
        log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in error.build_log)
        raise SwarmlabError(f"building {what} {tag} failed: {error.msg}\n{tail(log)}") from None
    progress.changed(f"built {tag} {how}")
    return tag
