"""Fabric tasks: `fab --list` shows them, `fab --help TASK` explains one. Each is a thin wrapper over
cluster/ (see README.md). `--target` is `lab` (default), `pulumi`, or the path of an inventory file."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from docker.errors import DockerException
from fabric import task
from invoke.context import Context
from invoke.exceptions import Exit

from cluster.config import Config, load_config
from cluster.errors import SwarmlabError
from cluster.inventory import Node
from cluster.lab import provider
from cluster.progress import TIMINGS, say
from cluster.runners import Nodes
from cluster.targets import resolve
from cluster.tasks import bootstrap as swarm
from cluster.tasks.deploy import configured_stack, deploy_configured_stack
from cluster.tasks.haproxy import configure_haproxy
from cluster.tasks.images import build_images
from cluster.tasks.nfs import configure_nfs
from cluster.tasks.status import status_report, table

F = TypeVar("F", bound=Callable[..., Any])
TARGET_HELP = {"target": "lab (default), pulumi, or the path of an inventory file (schema v1)"}


def reported(function: F) -> F:
    """Print our own errors as plain messages (no traceback), show the timings so far, exit non-zero."""

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


@contextmanager
def cluster_nodes(target: str) -> Iterator[tuple[Config, Nodes]]:
    config = load_config()
    nodes = Nodes(resolve(target, config))
    try:
        yield config, nodes
    finally:
        nodes.close()


def run_bootstrap(config: Config, nodes: Nodes) -> Node:
    """The bootstrap sequence; returns the manager the later steps run on."""
    leader = swarm.swarm_init(nodes, str(config.overlay_pool))
    swarm.swarm_join(nodes, leader)
    swarm.drain_managers(nodes, leader)
    configure_haproxy(nodes, configured_stack(config).routes)
    configure_nfs(nodes)
    return leader


def summary() -> None:
    say("\n" + TIMINGS.table())
    say("\nresult: " + ("changed" if TIMINGS.changed else "no change: the cluster was already as wanted"))


@task(help={"keep": "keep what was made if lab-up fails (for debugging)"})
@reported
def lab_up(c: Context, keep: bool = False) -> None:
    """Create the lab: lb, storage, managers and workers as containers with sshd and a Docker engine."""
    provider.lab_up(load_config(), keep=keep)
    summary()


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
    say(table(("NODE", "ROLE", "ADDRESS", "STATE"), rows))
    paths = provider.state_paths(config)
    say(f"\nstate directory: {paths.root} (inventory.json, id_ed25519, known_hosts, credentials)")


@task(help=TARGET_HELP)
@reported
def swarm_init(c: Context, target: str = "lab") -> None:
    """Initialise the swarm on the first manager (no change if a manager already runs one)."""
    with cluster_nodes(target) as (config, nodes):
        swarm.swarm_init(nodes, str(config.overlay_pool))


@task(help=TARGET_HELP)
@reported
def swarm_join(c: Context, target: str = "lab") -> None:
    """Join every manager and worker that is not a member yet."""
    with cluster_nodes(target) as (_, nodes):
        swarm.swarm_join(nodes)


@task(help=TARGET_HELP)
@reported
def drain_managers(c: Context, target: str = "lab") -> None:
    """Set every manager to Drain and wait until no task runs on a manager."""
    with cluster_nodes(target) as (_, nodes):
        swarm.drain_managers(nodes)


@task(help=TARGET_HELP)
@reported
def haproxy(c: Context, target: str = "lab") -> None:
    """Render haproxy.cfg from the inventory, validate it on the lb node, swap it in and reload."""
    with cluster_nodes(target) as (config, nodes):
        configure_haproxy(nodes, configured_stack(config).routes)


@task(help=TARGET_HELP)
@reported
def nfs(c: Context, target: str = "lab") -> None:
    """Configure the storage node's NFS v4 export (nfs-ganesha) and check it answers."""
    with cluster_nodes(target) as (_, nodes):
        configure_nfs(nodes)


@task(help=TARGET_HELP)
@reported
def bootstrap(c: Context, target: str = "lab") -> None:
    """swarm-init, swarm-join, drain-managers, haproxy and nfs, in order; idempotent."""
    with cluster_nodes(target) as (config, nodes):
        run_bootstrap(config, nodes)
    summary()


@task(name="build-images", help=TARGET_HELP)
@reported
def build_images_task(c: Context, target: str = "lab") -> None:
    """Build the stack's images on the storage node and push them to the cluster registry."""
    with cluster_nodes(target) as (config, nodes):
        build_images(nodes, config, configured_stack(config).spec.images)


@task(help={**TARGET_HELP, "dry_run": "print the rendered stack and its diff against what is deployed"})
@reported
def deploy_stack(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Build the images, render the stack, deploy it and wait until every service is healthy."""
    with cluster_nodes(target) as (config, nodes):
        deploy_configured_stack(nodes, config, swarm.find_leader(nodes), dry_run=dry_run)
        if not dry_run:
            say(f"\nserving at {nodes.inventory.endpoints.get('http', '?')}/")
    summary()


@task(help={"keep": "keep what was made if lab-up fails (for debugging)"})
@reported
def demo(c: Context, keep: bool = False) -> None:
    """The whole path on the lab: lab-up, bootstrap, deploy-stack; ends with the URL and timings."""
    config = load_config()
    provider.lab_up(config, keep=keep)
    with cluster_nodes("lab") as (config, nodes):
        leader = run_bootstrap(config, nodes)
        mode = deploy_configured_stack(nodes, config, leader)
        say("\n" + status_report(nodes))
        endpoints = nodes.inventory.endpoints
    summary()
    url = endpoints["http"]
    say(f"\nThe {config.stack} stack is up: open {url}/")
    if config.stack == "registration":
        credentials = provider.state_paths(config).credentials
        say(f"Storage mode: {mode}. API docs: {url}/api/docs (user api, password in {credentials}).")
        say(f"Eligible e-mails first: POST {url}/api/create_email_list with the API credentials (see README).")
        say(f"The lab's mail sink catches every mail (your OTP too): {url}/mail/messages?to=ADDRESS")
    say(f"HAProxy stats: {endpoints.get('stats', '-')}; cluster at a glance: `.venv/bin/fab status`")
    say("Tear it down with `make down` (or `.venv/bin/fab lab-down`).")


@task(help=TARGET_HELP)
@reported
def status(c: Context, target: str = "lab") -> None:
    """Nodes (role, status, availability, manager status) and services (replicas) at a glance."""
    with cluster_nodes(target) as (_, nodes):
        say(status_report(nodes))
