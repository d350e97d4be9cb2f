"""Fabric tasks: `fab --list` shows them, `fab --help TASK` explains one. Each is a thin wrapper over
cluster/ (see README.md). `--target` is `lab` (default), `pulumi`, or the path of an inventory file.
The lab (and the Docker SDK) loads only for a lab target or a lab task, through the provider registry.

Every task that changes something takes `--dry-run` (print the plan, change nothing), prints each
phase with its timing, and ends with a timing table and `result: changed` or `result: no change`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fabric import task
from invoke.context import Context
from invoke.exceptions import Exit

from cluster import flows
from cluster.config import Config, load_config
from cluster.errors import SwarmlabError
from cluster.plans import maintenance
from cluster.progress import Timings, say
from cluster.providers import lab_provider
from cluster.session import Session, open_session
from cluster.tasks import backup, nodes, revisions, security, services, swarm
from cluster.tasks import maintenance as maintenance_task
from cluster.tasks.clustermap import remove_map
from cluster.tasks.events import DEFAULT_SINCE, event_query, swarm_events
from cluster.tasks.isolation import isolate
from cluster.tasks.logs import DEFAULT_FOLLOW, DEFAULT_TAIL, GREP_WINDOW, log_query, service_logs
from cluster.tasks.nfs import configure_nfs
from cluster.tasks.registry import configure_registry
from cluster.tasks.status import cluster_map, cluster_status, rates_report, status_report, table
from cluster.unlockkeys import stored_keys
from cluster.workload import Workload, load_workload

F = TypeVar("F", bound=Callable[..., Any])
TARGET = {"target": "lab (default), pulumi, or the path of an inventory file (schema v1)"}
CHANGES = {**TARGET, "dry_run": "print what would change (the plan), change nothing"}
SERVICE = {
    **CHANGES,
    "service": "a service: its short name in the configured stack (ui) or its full name (registration_ui)",
}
NODE = {**CHANGES, "node": "a swarm node of the inventory, e.g. worker-2"}
STACK = {**CHANGES, "stack": "the workload to deploy (a directory of workloads/; default: stack in swarmlab.yaml)"}


@contextmanager
def reporting(timings: Timings | None = None) -> Iterator[None]:
    """Our own errors as plain messages (no traceback), then the run's timings so far; exit non-zero."""
    try:
        yield
    except SwarmlabError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        if timings is not None and timings.phases:
            say("\n" + timings.table())
        raise Exit(code=1) from None


def reported(function: F) -> F:
    """A task whose errors are reported (see reporting), also those raised before any phase."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with reporting():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def summary(timings: Timings, dry_run: bool = False) -> None:
    say("\n" + timings.table())
    if dry_run:
        verdict = "would change (dry run: nothing was changed)" if timings.would_change else "no change"
    else:
        verdict = "changed" if timings.changed else "no change: the cluster was already as wanted"
    say("\nresult: " + verdict)


def changing(target: str, dry_run: bool, work: Callable[[Session], object]) -> None:
    """Run a changing task's work (one task, or a flow) on a target, then the timing table and the
    result line of the phases it went through."""
    timings = Timings()
    with reporting(timings), open_session(load_config(), target, dry_run, timings) as session:
        work(session)
    summary(timings, dry_run)


def workload(config: Config, stack: str, values: str = "") -> Workload:
    return load_workload(stack or config.stack, config.environment, Path(values).expanduser() if values else None)


def notes(session: Session, deployed: Workload, storage_mode: str) -> None:
    endpoints = session.inventory.endpoints
    fill = {
        "http": endpoints.http,
        "credentials": str(session.state.credentials),
        "storage_mode": storage_mode or "-",
    }
    say(f"\nThe {deployed.name} stack is up: open {endpoints.http}/")
    if session.config.tls_cert is None:
        ca = session.state.ca_cert
        say(f"HTTPS with the cluster's own CA {ca}: `curl --cacert {ca} {endpoints.http}/` (or trust it in a browser)")
    for note in deployed.manifest.notes:
        if deployed.enabled(note.when):
            say(note.text.format(**fill))


@task(help={"keep": "keep what was made if lab-up fails (for debugging)"})
@reported
def lab_up(c: Context, keep: bool = False) -> None:
    """Create the lab: lb, storage, managers and workers as containers with sshd and a Docker engine."""
    config, timings = load_config(), Timings()
    with reporting(timings):
        lab_provider().up(config, timings, keep=keep)
        if stored_keys(config.state(provider="lab")):  # a lab with a swarm: restarted managers come back locked
            with open_session(config, "lab", timings=timings) as session:
                flows.run(flows.UNLOCK_MANAGERS, session)
    summary(timings)


@task(
    help={
        "purge": "also remove the lab's image cache (kept by default, so the next lab pulls instead of builds)",
        "machine-cache": "also remove the machine's image cache, shared by every lab (refused while a lab uses it)",
    }
)
@reported
def lab_down(c: Context, purge: bool = False, machine_cache: bool = False) -> None:
    """Remove every container, network and volume of the lab (its image cache stays unless --purge)."""
    timings = Timings()
    with reporting(timings):
        lab_provider().down(load_config(), timings, purge=purge, machine_cache=machine_cache)


@task
@reported
def lab_status(c: Context) -> None:
    """Show the lab's node containers, and where its keys, inventory and credentials are."""
    config = load_config()
    lab = lab_provider()
    rows = lab.status_rows(config)
    own_cache, machine_cache = lab.image_caches(config)
    if not rows:
        say(f"lab {config.cluster!r} is not up; image cache: {own_cache or 'none'}")
        say(f"machine image cache: {machine_cache or 'none yet'}")
        return
    say(table(("NODE", "ROLE", "ADDRESS", "STATE"), rows))
    say(
        f"\nstate directory: {config.state(provider='lab').root} (inventory.json, id_ed25519, known_hosts, credentials, tls/)"
    )
    say(f"image cache: {own_cache or 'none yet'} (kept by lab-down; `fab lab-down --purge` removes it)")
    say(
        f"machine image cache: {machine_cache or 'none yet'} (shared by every lab, fills an empty "
        "registry without building; `fab lab-down --purge --machine-cache` removes it)"
    )


@task(help=CHANGES)
@reported
def swarm_init(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Initialise the swarm on the first manager (no change if a manager already runs one)."""
    changing(target, dry_run, swarm.swarm_init)


@task(help=CHANGES)
@reported
def swarm_join(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Join every manager and worker that is not a member yet."""
    changing(target, dry_run, swarm.swarm_join)


@task(help=CHANGES)
@reported
def drain_managers(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Set every manager to Drain and wait until no task runs on a manager."""
    changing(target, dry_run, swarm.drain_managers)


@task(help=CHANGES)
@reported
def haproxy(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Render haproxy.cfg for every deployed workload, validate it on the lb node, swap it in and reload."""
    changing(target, dry_run, lambda session: flows.run(flows.HAPROXY, session))


@task(help=CHANGES)
@reported
def keepalived(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Two lbs only: keepalived on both (the virtual IP, VRRP to the other lb), validated, swapped in, reloaded."""
    changing(target, dry_run, lambda session: flows.run(flows.KEEPALIVED, session))


@task(help=CHANGES)
@reported
def nfs(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Configure the storage node's NFS v4 export (nfs-ganesha) and check it answers."""
    changing(target, dry_run, configure_nfs)


@task(help=CHANGES)
@reported
def isolation(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Containers reach neither the storage node, the nodes' SSH and Swarm ports nor the metadata service (DOCKER-USER)."""
    changing(target, dry_run, isolate)


@task(help=CHANGES)
@reported
def registry(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """The cluster registry serves TLS (a certificate of the cluster CA); every engine trusts that CA for it."""
    changing(target, dry_run, configure_registry)


@task(help=CHANGES)
@reported
def bootstrap(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """swarm-init, swarm-join, drain-managers, haproxy, keepalived (two lbs), nfs and registry, in order; idempotent."""
    changing(target, dry_run, lambda session: flows.run(flows.BOOTSTRAP, session))


@task(name="build-images", help=STACK)
@reported
def build_images_task(c: Context, target: str = "lab", dry_run: bool = False, stack: str = "") -> None:
    """Build a workload's images on the storage node and push them to the cluster registry."""
    chosen = workload(load_config(), stack)
    changing(target, dry_run, lambda session: flows.run(flows.BUILD_IMAGES, session, chosen))


@task(
    help={
        **STACK,
        "values": "a YAML file of values merged over the environment's values file (as Helm's -f); "
        "recorded in the revision",
    }
)
@reported
def deploy_stack(c: Context, target: str = "lab", dry_run: bool = False, stack: str = "", values: str = "") -> None:
    """Build the images, render the stack, deploy it, wait until every service is healthy; records a revision."""
    config = load_config()
    chosen = workload(config, stack, values)
    timings = Timings()
    with reporting(timings), open_session(config, target, dry_run, timings) as session:
        flows.run(flows.DEPLOY_STACK, session, chosen)
        if not dry_run:
            say(f"\nserving at {session.inventory.endpoints.http}/")
    summary(timings, dry_run)


@task(help={"keep": "keep what was made if lab-up fails (for debugging)"})
@reported
def demo(c: Context, keep: bool = False) -> None:
    """The whole path on the lab: lab-up, bootstrap, deploy-stack; ends with the URL and timings."""
    config = load_config()
    chosen = workload(config, "")
    timings = Timings()
    with reporting(timings):
        lab_provider().up(config, timings, keep=keep)
        with open_session(config, "lab", timings=timings) as session:
            done = flows.run(flows.DEMO, session, chosen)
            say("\n" + status_report(session.runner))
            summary(timings)
            notes(session, chosen, done.the_deployed().storage_mode)
        stats = session.inventory.endpoints.stats or "-"
    say(f"HAProxy stats: {stats}; cluster at a glance: `.venv/bin/fab status` (--map: tasks per node)")
    say(
        f"Cluster map: {session.inventory.endpoints.http}/map/ (user admin, password admin_password in the credentials)"
    )
    say("Tear it down with `make down` (or `.venv/bin/fab lab-down`).")


@task(help={**TARGET, "map": "also the cluster map: every node and the tasks running on it"})
@reported
def status(c: Context, target: str = "lab", map: bool = False) -> None:
    """Managers, quorum, nodes, services, their request and error rates, the VIP's lb (two lbs), and --map."""
    with open_session(load_config(), target) as session:
        report, leader = cluster_status(session.runner)
        say(report)
        if leader is None:
            return
        rates = rates_report(session, leader)
        if rates:
            say("\n" + rates)
        if map:
            say("\n" + cluster_map(session.runner, leader))


# --- day 2 --------------------------------------------------------------------------------------


@task(help={**CHANGES, "spec": "SERVICE=N, e.g. ui=6 (SERVICE: short name in the configured stack, or full name)"})
@reported
def scale(c: Context, spec: str, target: str = "lab", dry_run: bool = False) -> None:
    """Set a service's replica count and wait until that many run, healthy (refused where placement cannot)."""
    changing(target, dry_run, lambda session: services.scale(session, spec))


@task(help={**SERVICE, "image": "the new image reference", "force": "replace the tasks even if nothing changed"})
@reported
def update(
    c: Context, service: str, *, image: str = "", force: bool = False, target: str = "lab", dry_run: bool = False
) -> None:
    """Rolling update of a service (its update_config), waited on; reports an automatic rollback and why."""
    changing(target, dry_run, lambda session: services.update(session, service, image, force))


@task(help=SERVICE)
@reported
def rollback(c: Context, service: str, target: str = "lab", dry_run: bool = False) -> None:
    """Roll a service back to its previous spec and wait (no change if it was already rolled back)."""
    changing(target, dry_run, lambda session: services.rollback(session, service))


@task(help={**TARGET, "stack": "the stack (default: stack in swarmlab.yaml)"})
@reported
def history(c: Context, stack: str = "", target: str = "lab") -> None:
    """A stack's revisions: number, time, result, what changed, images.

    deploy-stack and rollback-stack record them in the state directory (keep_revisions bounds them).
    """
    config = load_config()
    name = workload(config, stack).name  # a known stack, checked before anything is read
    with open_session(config, target) as session:
        say(revisions.history_report(session, name))


@task(
    name="rollback-stack",
    help={
        **STACK,
        "stack": "the stack (default: stack in swarmlab.yaml)",
        "to": "the revision to deploy again (`fab history`; default: the one before the current)",
    },
)
@reported
def rollback_stack(c: Context, stack: str = "", to: int = 0, target: str = "lab", dry_run: bool = False) -> None:
    """Deploy a recorded revision of a stack again, wait, and record it.

    The revision's stack file (images, values, secret and config versions) through deploy-stack's deploy;
    refused, changing nothing, when the swarm lost a version it names.
    """
    chosen = workload(load_config(), stack)
    changing(target, dry_run, lambda session: flows.run(flows.ROLLBACK_STACK, session, chosen, rollback_to=to or None))


@task(name="drain-node", help=NODE)
@reported
def drain_node(c: Context, node: str, target: str = "lab", dry_run: bool = False) -> None:
    """Drain a node: its tasks move elsewhere; waits until every service runs what it can, healthy."""
    changing(target, dry_run, lambda session: nodes.drain_node(session, node))


@task(name="activate-node", help=NODE)
@reported
def activate_node(c: Context, node: str, target: str = "lab", dry_run: bool = False) -> None:
    """Make a drained worker schedulable again and wait until every service runs its replicas."""
    changing(target, dry_run, lambda session: nodes.activate_node(session, node))


@task(
    name="maintain-nodes",
    help={
        **CHANGES,
        "nodes": "the nodes, comma-separated (e.g. worker-1,worker-2); default: every swarm node (not the lb)",
        "role": "every node of a role instead: worker, manager or lb",
        "command": "a command to run as root on each node, e.g. 'apt-get update && apt-get -y upgrade'",
        "reboot": "reboot each node (the lab restarts its container), after the command",
    },
)
@reported
def maintain_nodes(
    c: Context,
    *,
    nodes: str | None = None,
    role: str | None = None,
    command: str = "",
    reboot: bool = False,
    target: str = "lab",
    dry_run: bool = False,
) -> None:
    """Node by node (workers, managers, then the lb): drain, run a command and/or reboot, wait until back
    and Ready, activate, wait until the services converge; rebalance at the end.

    A manager goes down only while every other one is Ready and reachable; the run stops at the first node
    that does not come back, leaving it drained. A daemon.json that differs from the rendered one is written
    and applied by a reboot. --dry-run prints the order and the checks.
    """
    chosen = maintenance.parse_selection(nodes, role, command, reboot)  # checked before anything runs
    changing(target, dry_run, lambda session: maintenance_task.maintain_nodes(session, chosen, command, reboot))


@task(help=CHANGES)
@reported
def rebalance(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Spread unevenly placed services again (`service update --force`, one service at a time)."""
    changing(target, dry_run, services.rebalance)


@task(name="rotate-join-tokens", help=CHANGES)
@reported
def rotate_join_tokens(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """New worker and manager join tokens (never shown); nodes already joined are not affected."""
    changing(target, dry_run, security.rotate_join_tokens)


@task(name="rotate-unlock-key", help=CHANGES)
@reported
def rotate_unlock_key(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """A new swarm unlock key (autolock), kept in the state directory before the old ones; never shown."""
    changing(target, dry_run, lambda session: flows.run(flows.ROTATE_UNLOCK_KEY, session))


@task(name="rotate-ca", help=CHANGES)
@reported
def rotate_ca(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """A new swarm root CA; waits until every node that is up holds a certificate of it."""
    changing(target, dry_run, security.rotate_ca)


@task(help=CHANGES)
@reported
def recover(c: Context, target: str = "lab", dry_run: bool = False) -> None:
    """Re-form a swarm that lost quorum, bring its managers back; nodes whose certificate expired rejoin."""
    changing(target, dry_run, lambda session: flows.run(flows.RECOVER, session))


@task(
    name="backup",
    help={
        **CHANGES,
        "keep": "then remove this cluster's older backups beyond the N newest (N >= 1; default: keep every one)",
    },
)
@reported
def backup_task(c: Context, keep: str = "", target: str = "lab", dry_run: bool = False) -> None:
    """Swarm state (from a non-leader manager, engine stopped meanwhile) and each deployed bundle's declared
    data, into a timestamped directory of the cluster's state directory (mode 700, files 600); with --keep N,
    then the cluster's older backups beyond the N newest are removed."""
    kept = backup.keep_option(keep)  # checked before anything runs
    changing(target, dry_run, lambda session: backup.backup_and_prune(session, kept))


@task(
    help={
        **CHANGES,
        "from_": "the backup directory, anywhere, also another cluster's (default: this cluster's newest in its "
        "state directory)",
        "swarm": "restore the swarm state instead, for a cluster whose managers all lost theirs (its own backup only)",
    }
)
@reported
def restore(c: Context, from_: str = "", swarm: bool = False, target: str = "lab", dry_run: bool = False) -> None:
    """Verify a backup, then load its workload data into the running services (or, with --swarm, put its
    swarm state back and re-form the swarm from it) and wait until healthy."""
    if swarm:
        changing(target, dry_run, lambda session: flows.run(flows.RESTORE_SWARM, session, backup_dir=from_))
    else:
        changing(target, dry_run, lambda session: backup.restore(session, from_))


@task(
    help={
        **TARGET,
        "service": "the service: its full name (registration_api) or its name in its stack (api)",
        "tail": f"the newest lines of each task, then the newest of them all (default {DEFAULT_TAIL})",
        "since": "only lines newer than this (90s, 10m, 1h30m, 2d)",
        "follow": "keep printing new lines as they come, for --follow-for",
        "follow_for": f"how long --follow lasts (default {DEFAULT_FOLLOW}, at most 1h)",
        "grep": f"only lines matching this regular expression (Python syntax), among the newest {GREP_WINDOW} "
        "of each task (with --since: all since then)",
        "task": "only the task in this slot (1, 2, ...), and the earlier tasks of that slot",
    }
)
@reported
def logs(
    c: Context,
    service: str,
    *,
    target: str = "lab",
    tail: int = DEFAULT_TAIL,
    since: str = "",
    follow: bool = False,
    follow_for: str = DEFAULT_FOLLOW,
    grep: str = "",
    task: int = 0,
) -> None:
    """A service's logs from all its tasks, through a manager: time, task@node, line; secrets masked."""
    query = log_query(
        service, tail=tail, since=since, follow=follow, follow_for=follow_for, grep=grep, task=task
    )  # checked before anything runs
    with open_session(load_config(), target) as session:
        if service_logs(session, query, say) == 0:
            say(f"# no log lines from {service} (try --since, another --task or --grep)")


@task(
    help={
        **TARGET,
        "since": f"how far back (default {DEFAULT_SINCE}; 90s, 10m, 1h30m, 2d)",
        "type": "only these event types: service|node|secret|config|network (comma-separated)",
    }
)
@reported
def events(c: Context, target: str = "lab", since: str = DEFAULT_SINCE, type: str = "") -> None:
    """The swarm's events of the last --since, oldest first: time, type, action, name, what changed."""
    query = event_query(since, type)  # checked before anything runs
    with open_session(load_config(), target) as session:
        if swarm_events(session, query, say) == 0:
            say(f"# no swarm events in the last {since}")


@task(name="cluster-map", help={**CHANGES, "remove": "remove the map's containers from the managers instead"})
@reported
def cluster_map_task(c: Context, target: str = "lab", dry_run: bool = False, remove: bool = False) -> None:
    """The cluster map (nodes and their tasks, refreshed) on every manager, at /map/ for the admin credential."""
    changing(target, dry_run, remove_map if remove else lambda session: flows.run(flows.DEPLOY_MAP, session))


# --- the rehearsal: nodes that boot like OpenStack VMs, driven as --target rehearsal ---------------


@task(name="rehearsal-up")
@reported
def rehearsal_up(c: Context) -> None:
    """Nodes that boot like cloud VMs (systemd, cloud-init with the Pulumi program's user data)."""
    from cluster.lab.rehearsal.nodes import make_rehearsal  # the local engine: only for this task

    timings = Timings()
    with reporting(timings):
        make_rehearsal(load_config(), timings)
    summary(timings)


@task(name="rehearsal-down")
@reported
def rehearsal_down(c: Context) -> None:
    """Remove the rehearsal: its containers, network, volumes, loop device and state directory."""
    from cluster.lab.rehearsal.nodes import remove_rehearsal

    timings = Timings()
    with reporting(timings):
        remove_rehearsal(load_config(), timings)


@task(help={"stack": "the workload to deploy (default: stack in swarmlab.yaml)"})
@reported
def rehearsal(c: Context, stack: str = "") -> None:
    """The cloud path here: rehearsal-up, then bootstrap and deploy-stack with --target rehearsal."""
    from cluster.lab.rehearsal.nodes import make_rehearsal

    config = load_config()
    chosen = workload(config, stack)
    timings = Timings()
    with reporting(timings):
        make_rehearsal(config, timings)
        with open_session(config, "rehearsal", timings=timings) as session:
            done = flows.run(flows.REHEARSAL, session, chosen)
            say("\n" + status_report(session.runner))
            summary(timings)
            notes(session, chosen, done.the_deployed().storage_mode)
    say("Tear it down with `make rehearsal-down`.")
