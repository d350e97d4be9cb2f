"""The rehearsal's cloud image: the lab's Debian base (the same debootstrap recipe) plus what a Debian
genericcloud image brings that our user data relies on. Tagged by the hash of its inputs."""

from __future__ import annotations

import docker

from cluster.config import Config
from cluster.images import BuildContext
from cluster.lab.build import ensure_base_image, ensure_built
from cluster.progress import PhaseResult
from rendering.render import TEMPLATES_DIR, render

IMAGE_REPOSITORY = "swarmlab/rehearsal-node"
# What a container's systemd does not do and a VM's does: mount /etc/fstab's block devices at boot.
FSTAB_UNIT = "fstab-devices.service"
# A cloud image's own software, nothing of swarmlab's (REHEARSAL-NOTES.md: what genericcloud adds).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "cloud-init",
    "openssh-server",
    "locales",
    "sudo",
    "ca-certificates",
)


def image_context(config: Config, base_tag: str) -> BuildContext:
    dockerfile = render(
        "rehearsal/Dockerfile.j2",
        {
            "base_image": base_tag,
            "packages": PACKAGES,
            "debian_mirror": config.debian_mirror,
            "debian_suite": config.debian_suite,
        },
    )
    unit = (TEMPLATES_DIR / "rehearsal" / FSTAB_UNIT).read_bytes()
    return BuildContext({"Dockerfile": dockerfile.encode(), FSTAB_UNIT: unit}, {})


def ensure_rehearsal_image(engine: docker.DockerClient, config: Config, progress: PhaseResult) -> str:
    """The cloud image's tag, built here unless an image of the same inputs exists."""
    base = ensure_base_image(engine, config, progress)
    context = image_context(config, base.tag)
    return ensure_built(
        engine,
        IMAGE_REPOSITORY,
        context,
        what="the rehearsal image",
        how="(Debian with systemd and cloud-init, nothing of ours)",
        progress=progress,
    )
