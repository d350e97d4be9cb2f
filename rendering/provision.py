"""What each role installs: the provisioning scripts rendered for a role (pure).

Shared by cluster/ (lab images) and infra/ (cloud-init), so it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from rendering.render import render


@dataclass(frozen=True)
class ProvisionInput:
    role: str
    debian_mirror: str = "http://deb.debian.org/debian"
    debian_suite: str = "bookworm"


@dataclass(frozen=True)
class DaemonJsonInput:
    registry: str


ROLES = ("manager", "worker", "lb", "storage")


def provision_script(
    role: str, debian_mirror: str = "http://deb.debian.org/debian", debian_suite: str = "bookworm"
) -> str:
    """The shell script that makes a plain Debian machine into a node of this role."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return render(f"provision/{role}.sh.j2", ProvisionInput(role, debian_mirror, debian_suite))


def daemon_json(registry: str) -> str:
    """/etc/docker/daemon.json for a node that pulls from the cluster's registry."""
    return render("docker/daemon.json.j2", DaemonJsonInput(registry))
