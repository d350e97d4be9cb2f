"""Fabric tasks: `fab --list` shows them. Each is a thin wrapper over cluster/ (see README.md)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from docker.errors import DockerException
from fabric import task
from invoke.context import Context
from invoke.exceptions import Exit

from cluster.config import load_config
from cluster.errors import SwarmlabError
from cluster.lab import provider
from cluster.progress import TIMINGS, say

F = TypeVar("F", bound=Callable[..., Any])


def reported(function: F) -> F:
    """Print our own errors as plain messages (no traceback) and exit non-zero."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (SwarmlabError, DockerException) as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            if TIMINGS.phases:
                say("\n" + TIMINGS.table())
            raise Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


@task(help={"keep": "keep what was made if lab-up fails (for debugging)"})
@reported
def lab_up(c: Context, keep: bool = False) -> None:
    """Create the lab: lb, storage, managers and workers as containers with sshd and a Docker engine."""
    provider.lab_up(load_config(), keep=keep)
    say("\n" + TIMINGS.table())


@task
@reported
def lab_down(c: Context) -> None:
    """Remove every container, network and volume of the lab."""
    provider.lab_down(load_config())


@task
@reported
def lab_status(c: Context) -> None:
    """Show the lab's node containers, and where its keys, inventory and credentials are."""
    config = load_config()
    rows = provider.lab_status_rows(config)
    if not rows:
        say(f"lab {config.cluster!r} is not up")
        return
    say(f"{'node':<12} {'role':<8} {'address':<15} state")
    for name, role, ip, state in rows:
        say(f"{name:<12} {role:<8} {ip:<15} {state}")
    paths = provider.state_paths(config)
    say(f"\nstate directory: {paths.root} (inventory.json, id_ed25519, known_hosts, credentials)")
