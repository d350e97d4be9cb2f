"""The lab provider: node containers created, found and deleted by label on the local engine.

Like kind, creation is an ordered list of actions (CREATE_ACTIONS), each a timed phase, and a
failure removes what was made unless the user asks to keep it for debugging. The lab is the only
provider with a local shortcut: it ships its locally built base image to the storage node.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.models.networks import Network
from docker.models.volumes import Volume

import topology
from cluster.archive import tar_bytes
from cluster.config import Config
from cluster.errors import ConfigError, ConfigErrors, SwarmlabError
from cluster.executor import Executor
from cluster.facts import read
from cluster.facts.daemons import image_present
from cluster.images import BaseImage
from cluster.inventory import Inventory, Node, Role, dump_inventory, load_inventory
from cluster.lab import keys
from cluster.lab.build import ensure_base_image, ensure_node_image
from cluster.lab.engine import client, create_node_container, ensure_engine
from cluster.lab.forwarder import forwarder_config, render_forwarder
from cluster.lab.layout import (
    FORWARDER,
    FORWARDER_CONFIG,
    IMAGE_CACHE_DIR,
    IMAGE_CACHE_VOLUME,
    LABEL_CACHE,
    LABEL_CLUSTER,
    LABEL_FORWARDER,
    LABEL_IMAGE_CACHE,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_SHAPE,
    container_name,
    container_names,
    data_volume,
    docker_volume,
    forwarder_ip,
    forwarder_labels,
    forwarder_name,
    known_hosts_text,
    lab_inventory,
    lab_nodes,
    labels,
    network_name,
    node_ports,
    published_ports,
    registry_cache,
    rekeyed,
    reserved_addresses,
    shape,
    two_lbs,
)
from cluster.operations import Plan, Run, Wait
from cluster.parallel import at_once
from cluster.plans.maintenance import plan_engine_stop
from cluster.progress import PhaseResult, Timings, say
from cluster.runners import SshRunner
from cluster.state import StatePaths, remove_dir, write_private
from cluster.waiting import Verdict, wait_until
from rendering.isolation import cluster_isolation_script
from rendering.provision import daemon_json, engine_metrics_ip

REBOOT_STOP_TIMEOUT = 30  # seconds `docker restart` gives the node's processes before it kills them
NODE_ANSWER_TIMEOUT = 90  # a new or restored node container answers: its sshd, or its engine
# Node containers created at once: calls to the machine's own Docker engine, not SSH sessions (which
# cluster.parallel.PARALLEL_LIMIT bounds); 8 since creation went parallel, no reason recorded for less.
CREATE_PARALLEL = 8


class LabProvider:
    """`--target lab`: the inventory lab-up wrote; the base image comes from the local engine; the
    machine's image cache is mounted on every lab's storage node."""

    name = "lab"
    image_cache = IMAGE_CACHE_DIR

    def inventory(self, config: Config, target: str) -> Inventory:
        path = config.state(provider=self.name).inventory
        if not path.exists():
            raise SwarmlabError(f"lab {config.cluster!r} is not up (no {path}): run `fab lab-up` first")
        return load_inventory(path)

    def supply_base_image(self, executor: Executor, storage: Node, base: BaseImage, progress: PhaseResult) -> None:
        """The lab built the base image locally for its node image: hand it to the storage node's
        engine through the local Docker API (`docker save` into the container, no compression, no SSH)
        instead of debootstrapping it again there. Over SFTP with gzip it took about 9 s."""
        if read(executor.runner, storage, image_present(base.tag)):
            progress.note(f"{base.tag} present on {storage.name}")
            return
        if executor.dry_run:
            progress.planned(f"would copy {base.tag} from the local engine to {storage.name}", True)
            return
        engine = client()
        container = node_container(engine, executor.runner.inventory.cluster, storage.name)
        if container is None:
            raise SwarmlabError(f"no lab container for {storage.name}: run `fab lab-up`")
        saved = b"".join(engine.images.get(base.tag).save(named=True))
        container.put_archive("/tmp", tar_bytes({"swarmlab-base.tar": saved}))
        archive = "/tmp/swarmlab-base.tar"
        load = f"docker load -q -i {archive}; status=$?; rm -f {archive}; exit $status"
        executor.execute(Plan((Run(storage.name, load, f"copied {base.tag} to {storage.name}"),)), progress)

    # The lab's own tasks (lab-up, lab-down, lab-status), for the fabfile through the provider registry.
    def up(self, config: Config, timings: Timings, keep: bool = False) -> Inventory:
        return lab_up(config, timings, keep=keep)

    def down(self, config: Config, timings: Timings, purge: bool = False, machine_cache: bool = False) -> None:
        lab_down(config, timings, purge=purge, machine_cache=machine_cache)

    def status_rows(self, config: Config) -> list[tuple[str, str, str, str]]:
        return lab_status_rows(config)

    def image_caches(self, config: Config) -> tuple[str | None, str | None]:
        return image_caches(config)

    def restore_node(self, config: Config, node: Node, executor: Executor, progress: PhaseResult) -> bool:
        """Start the node's container again, or re-create it (empty engine, new host key) if it is gone;
        then wait until it answers over SSH. A dry run says which it would do."""
        engine = client()
        found = node_container(engine, config.cluster, node.name)
        if found is not None and found.status == "running":
            progress.note(f"the container of {node.name} runs")
            return True
        verb, done, what = (
            ("start", "started", "the stopped container")
            if found is not None
            else ("re-create", "re-created", "the container")
        )
        if executor.dry_run:
            progress.planned(f"would {verb} {what} of {node.name}", True)
            return False
        try:
            if found is not None:
                found.start()
            else:
                _recreate(config, engine, node, progress)
                executor.runner.forget(node)  # its host key is new
        except DockerException as error:
            raise SwarmlabError(f"could not bring back {node.name}: the local Docker engine said: {error}") from None
        progress.changed(f"{done} {what} of {node.name}")
        answers = Wait(
            node.name,
            "docker info --format '{{.ServerVersion}}'",
            _engine_answers,
            f"{node.name} answers",
            NODE_ANSWER_TIMEOUT,
        )
        executor.execute(Plan((answers,)), progress)
        return True

    def reboot_node(self, config: Config, node: Node, executor: Executor, progress: PhaseResult) -> None:
        """`docker restart` of the node's container: its processes start again from node-init, its
        filesystem (daemon.json, the swarm's state) and volumes stay, as a machine's disk does."""
        if executor.dry_run:
            progress.planned(f"would restart the container of {node.name}", True)
            return
        engine = client()
        found = node_container(engine, config.cluster, node.name)
        if found is None:
            raise SwarmlabError(f"no lab container for {node.name}: `fab recover` re-creates it")
        executor.execute(plan_engine_stop(node.name), progress)  # as a shutdown would, not killed with the rest
        executor.runner.forget(node)  # its connection dies with the container's sshd
        try:
            found.restart(timeout=REBOOT_STOP_TIMEOUT)
        except DockerException as error:
            raise SwarmlabError(f"could not restart {node.name}: the local Docker engine said: {error}") from None
        progress.changed(f"restarted the container of {node.name}")


def _engine_answers(output: str) -> Verdict:
    return Verdict.ready() if output.strip() else Verdict.waiting("the engine does not answer yet")


def _recreate(config: Config, engine: docker.DockerClient, node: Node, progress: PhaseResult) -> None:
    """A lost node's container, made again as lab-up makes it (its Docker volume, if left, comes back too)."""
    build = LabBuild(config, engine, config.state(provider=LabProvider.name))
    build_images(build, progress)
    build.authorized_key = keys.public_of(build.paths.private_key.read_bytes(), f"swarmlab-{config.cluster}")
    planned = next(n for n in lab_nodes(config) if n.name == node.name)
    build.host_keys[node.name] = keys.new_key_pair(node.name)
    known = rekeyed(build.paths.known_hosts.read_text(), config, planned, build.host_keys[node.name].public_openssh)
    write_private(build.paths.known_hosts, known.encode())
    _create_node(build, planned)


# --- lab-up as an ordered list of actions ---------------------------------------------------------


@dataclass
class LabBuild:
    """What the create actions share as they go."""

    config: Config
    engine: docker.DockerClient
    paths: StatePaths
    image: str = ""
    authorized_key: str = ""
    host_keys: dict[str, keys.KeyPair] = field(default_factory=dict)
    made_caches: list[str] = field(default_factory=list)  # cache volumes this run made: a failed lab-up removes them

    @property
    def inventory(self) -> Inventory:
        return lab_inventory(self.config, self.paths)


def lab_containers(engine: docker.DockerClient, cluster: str) -> list[Container]:
    return list(engine.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={cluster}"}))


def node_container(engine: docker.DockerClient, cluster: str, node: str) -> Container | None:
    """The container of one node of the lab, running or not; None if it is gone."""
    return next((c for c in lab_containers(engine, cluster) if c.labels.get(LABEL_NODE) == node), None)


def check_ports_free(build: LabBuild, progress: PhaseResult) -> None:
    config = build.config
    problems = []
    for key, port in (
        ("http_port", config.http_port),
        ("https_port", config.https_port),
        ("ssh_port", config.ssh_port),
        ("stats_port", config.stats_port),
    ):
        with socket.socket() as probe:
            # SO_REUSEADDR as docker-proxy sets it: a port in TIME_WAIT after a lab-down is free to it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((str(config.bind_address), port))
            except OSError as error:
                problems.append(
                    ConfigError(
                        key, port, f"cannot be bound on {config.bind_address} ({error.strerror})", "pick a free port"
                    )
                )
    if problems:
        raise ConfigErrors(problems)
    ports = (config.http_port, config.https_port, config.ssh_port, config.stats_port)
    progress.note(f"ports {', '.join(map(str, ports))} free on {config.bind_address}")


def check_network_free(build: LabBuild, progress: PhaseResult) -> None:
    config = build.config
    for network in build.engine.networks.list():
        for pool in (network.attrs.get("IPAM") or {}).get("Config") or []:
            subnet = pool.get("Subnet")
            other = subnet and ":" not in subnet and network.name != network_name(config)
            if other and ipaddress.ip_network(subnet).overlaps(config.cidr):
                raise ConfigErrors(
                    [
                        ConfigError(
                            "cidr",
                            str(config.cidr),
                            f"overlaps Docker network {network.name} ({subnet})",
                            "choose another private range",
                        )
                    ]
                )
    progress.note(f"{config.cidr} overlaps no Docker network")


def check_free(build: LabBuild, progress: PhaseResult) -> None:
    for warning in build.config.warnings:
        progress.note(f"warning: {warning}")
    check_ports_free(build, progress)
    check_network_free(build, progress)


def build_images(build: LabBuild, progress: PhaseResult) -> None:
    base = ensure_base_image(build.engine, build.config, progress)
    build.image = ensure_node_image(build.engine, build.config, base.tag, progress)


def make_keys(build: LabBuild, progress: PhaseResult) -> None:
    """One client key pair for the lab, one host key per node, pinned in known_hosts."""
    config, paths = build.config, build.paths
    user_key = keys.new_key_pair(f"swarmlab-{config.cluster}")
    write_private(paths.private_key, user_key.private_openssh)
    build.authorized_key = user_key.public_openssh
    build.host_keys = {n.name: keys.new_key_pair(n.name) for n in lab_nodes(config)}
    public_keys = {name: pair.public_openssh for name, pair in build.host_keys.items()}
    write_private(paths.known_hosts, known_hosts_text(config, public_keys).encode())
    progress.changed(f"keys in {paths.root}")


def create_network(build: LabBuild, progress: PhaseResult) -> None:
    config = build.config
    pool = docker.types.IPAMPool(subnet=str(config.cidr), aux_addresses=reserved_addresses(config))
    build.engine.networks.create(
        network_name(config), driver="bridge", ipam=docker.types.IPAMConfig(pool_configs=[pool]), labels=labels(config)
    )
    build.engine.volumes.create(data_volume(config), labels=labels(config))
    progress.changed(f"network {network_name(config)} ({config.cidr}) and the storage data volume")


def _create_node(build: LabBuild, node: topology.PlannedNode) -> None:
    config, engine = build.config, build.engine
    role = Role(node.role)
    volumes: dict[str, Mapping[str, str]] = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}}
    if role is not Role.LB:
        # Kept across lab-down (the node's images are the cache); node-init forgets the old swarm.
        volumes[_cache_volume(build, docker_volume(config, node)).name] = {"bind": topology.DOCKER_DIR, "mode": "rw"}
    if role in (Role.STORAGE, Role.WORKER):
        # The storage node exports this directory; workers see the same directory at the same path,
        # which stands in for an NFS mount where the kernel has no NFS client (ARCHITECTURE.md, Storage).
        volumes[data_volume(config)] = {"bind": topology.DATA_ROOT, "mode": "rw"}
    if role is Role.STORAGE:
        volumes[_cache_volume(build, registry_cache(config)).name] = {"bind": topology.REGISTRY_DATA_DIR, "mode": "rw"}
        volumes[_machine_image_cache(engine).name] = {"bind": IMAGE_CACHE_DIR, "mode": "rw"}
    container = create_node_container(
        engine,
        build.image,
        name=container_name(config, node),
        hostname=node.name,
        ip=node.ip,
        network=network_name(config),
        labels=labels(config, node),
        binds=volumes,
        ports=node_ports(config, node),
        environment={"SWARMLAB_ROLE": node.role},
    )
    host_key = build.host_keys[node.name]
    files = {
        "/etc/ssh/ssh_host_ed25519_key": host_key.private_openssh,
        "/etc/ssh/ssh_host_ed25519_key.pub": host_key.public_openssh.encode() + b"\n",
        "/root/.ssh/authorized_keys": build.authorized_key.encode() + b"\n",
    }
    modes = {"/etc/ssh/ssh_host_ed25519_key": 0o600, "/root/.ssh/authorized_keys": 0o600}
    if role is not Role.LB:
        files["/etc/docker/daemon.json"] = daemon_json(engine_metrics_ip(node.role, node.ip)).encode()
        files[topology.ISOLATION_SCRIPT] = cluster_isolation_script(config.cidr, config.lb_count).encode()
        modes[topology.ISOLATION_SCRIPT] = 0o755
    container.put_archive("/", tar_bytes(files, modes))
    container.start()


def _cache_volume(build: LabBuild, name: str) -> Volume:
    """A volume of the lab's image cache (the registry's data, a node's engine): reused when it
    exists, since `lab-down` keeps it; labelled apart from the lab so that only --purge removes it."""
    try:
        return build.engine.volumes.get(name)
    except NotFound:
        build.made_caches.append(name)
        return build.engine.volumes.create(name, labels={LABEL_CACHE: build.config.cluster})


def _machine_image_cache(engine: docker.DockerClient) -> Volume:
    """The machine's image cache, shared by every lab: made by the first lab that needs it, never by
    a failed lab-up's cleanup removed (another lab may have filled it meanwhile)."""
    try:
        return engine.volumes.get(IMAGE_CACHE_VOLUME)
    except NotFound:
        return engine.volumes.create(IMAGE_CACHE_VOLUME, labels={LABEL_IMAGE_CACHE: "machine"})


def create_nodes(build: LabBuild, progress: PhaseResult) -> None:
    """All node containers at once: each is a few engine API calls, so a big lab is not created one
    node after the other."""

    def create(node: topology.PlannedNode) -> None:
        _create_node(build, node)
        progress.changed(f"created {node.name} ({node.role}, {node.ip})")

    nodes = lab_nodes(build.config)
    # The storage node first, alone: Docker fills a new named volume from the image on its first
    # mount, and two containers mounting the empty data volume at once raced ("mkdir .../data: file
    # exists", seen once in make chaos). Once it is filled, the workers mount it together.
    first = [n for n in nodes if Role(n.role) is Role.STORAGE]
    for node in first:
        create(node)
    created = at_once([node for node in nodes if node not in first], create, limit=CREATE_PARALLEL)
    if created.failures:
        raise created.failures[0][1]  # the first failure stops lab-up; its cleanup removes what was made


def create_forwarder(build: LabBuild, progress: PhaseResult) -> None:
    """Two lbs: the container that publishes the lab's ports and forwards them to the VIP (the lab's
    floating IP; cluster/lab/forwarder.py). The node image's HAProxy in TCP mode, in the foreground."""
    config, engine = build.config, build.engine
    host_config = engine.api.create_host_config(
        port_bindings={int(p.split("/")[0]): binding for p, binding in published_ports(config).items()},
    )
    created = engine.api.create_container(
        build.image,
        name=forwarder_name(config),
        hostname=FORWARDER,
        labels=forwarder_labels(config),
        entrypoint=["/usr/bin/tini", "--", "/usr/sbin/haproxy", "-db", "-f", FORWARDER_CONFIG],
        ports=[int(p.split("/")[0]) for p in published_ports(config)],
        host_config=host_config,
        networking_config=engine.api.create_networking_config(
            {network_name(config): engine.api.create_endpoint_config(ipv4_address=forwarder_ip(config))}  # type: ignore[arg-type]
        ),
    )
    container = engine.containers.get(created["Id"])
    container.put_archive("/", tar_bytes({FORWARDER_CONFIG: render_forwarder(forwarder_config(config)).encode()}))
    container.start()
    progress.changed(f"created {FORWARDER} ({forwarder_ip(config)}): the published ports reach the VIP's holder")


def wait_ready(build: LabBuild, progress: PhaseResult) -> None:
    """Every node answers over SSH through the jump host, and every engine answers its CLI."""
    inventory = build.inventory
    nodes = SshRunner(inventory)
    try:

        def ready(node: Node) -> None:
            command = "true" if node.role is Role.LB else "docker info --format '{{.ServerVersion}}'"

            def answers() -> Verdict:
                nodes.run(node, command)
                return Verdict.ready()

            wait_until(answers, what=f"{node.name} answers over SSH", timeout=NODE_ANSWER_TIMEOUT)

        ready(inventory.lb)  # the jump host first: everything else goes through it (the other lb too)
        nodes.each([n for n in inventory.nodes if n.name != inventory.lb.name], ready, "waiting for nodes")
    finally:
        nodes.close()
    progress.note(f"{len(inventory.nodes)} nodes answer")


def write_inventory(build: LabBuild, progress: PhaseResult) -> None:
    write_private(build.paths.inventory, dump_inventory(build.inventory).encode())
    progress.changed(f"inventory written to {build.paths.inventory}")


Action = Callable[[LabBuild, PhaseResult], None]
# (phase, what it does, action), in order. Checks come first and create nothing.
CREATE_ACTIONS: tuple[tuple[str, str, Action], ...] = (
    ("lab-checks", "host ports and the node network are free", check_free),
    ("images", "Debian base (debootstrap) and lab node image (provisioning scripts)", build_images),
    ("keys", "a client key pair and a pinned host key per node", make_keys),
    ("network", "the lab's bridge network and storage volume", create_network),
    ("lab-nodes", "node containers with sshd and a Docker engine", create_nodes),
    ("lab-ready", "wait for sshd and the Docker engines, over SSH through the lb node", wait_ready),
    ("inventory", "the inventory every task reads", write_inventory),
)
# Two lbs: after the nodes, before anything is reached through the published SSH port.
FORWARDER_ACTION: tuple[str, str, Action] = (
    "lab-forwarder",
    "the VIP forwarder: the published ports reach whichever lb holds the VIP",
    create_forwarder,
)


def create_actions(config: Config) -> tuple[tuple[str, str, Action], ...]:
    """CREATE_ACTIONS, with the VIP forwarder's after the nodes when there are two lbs."""
    if not two_lbs(config):
        return CREATE_ACTIONS
    at = [name for name, _, _ in CREATE_ACTIONS].index("lab-nodes") + 1
    return (*CREATE_ACTIONS[:at], FORWARDER_ACTION, *CREATE_ACTIONS[at:])


def _check_existing_shape(engine: docker.DockerClient, config: Config) -> list[Container]:
    existing = lab_containers(engine, config.cluster)
    shapes = {c.labels.get(LABEL_SHAPE, "") for c in existing}
    if existing and shapes != {shape(config)}:
        raise ConfigErrors(
            [
                ConfigError(
                    "cluster",
                    config.cluster,
                    f"a lab of this name is already up with shape {', '.join(sorted(shapes))}, not {shape(config)}",
                    "run `fab lab-down` first, or choose another cluster name",
                )
            ]
        )
    return existing


def _restart(build: LabBuild, existing: list[Container], timings: Timings) -> Inventory:
    with timings.phase("lab-nodes", f"lab {build.config.cluster!r} already exists") as p:
        for container in existing:
            if container.status != "running":
                container.start()
                p.changed(f"started {container.name}")
        wait_ready(build, p)
    return build.inventory


def lab_up(config: Config, timings: Timings, keep: bool = False) -> Inventory:
    """Create the lab (or find it already up with the same shape) and write its inventory; its phases
    go to `timings`."""
    with timings.phase("engine", "find or start the local Docker engine") as p:
        ensure_engine(p)
        engine = client()
    build = LabBuild(config, engine, config.state(provider=LabProvider.name))
    existing = _check_existing_shape(engine, config)
    expected = container_names(config)
    if existing and {c.name for c in existing} == expected and build.paths.inventory.exists():
        return _restart(build, existing, timings)
    if existing:
        raise SwarmlabError(
            f"lab {config.cluster!r} is half there ({len(existing)} of {len(expected)} containers): "
            "run `fab lab-down` first"
        )
    try:
        for name, description, action in create_actions(config):
            with timings.phase(name, description) as p:
                try:
                    action(build, p)
                except DockerException as error:
                    raise SwarmlabError(f"{name}: the local Docker engine said: {error}") from None
    except BaseException:
        if keep:
            say("lab-up failed; keeping what was made (--keep). Remove it with `fab lab-down`")
        else:
            say("lab-up failed; removing what it made (use --keep to keep it for debugging)")
            lab_down(config, timings, quiet=True)
            _remove_volumes(build.engine, build.made_caches)
        raise
    return build.inventory


def _remove(items: Iterable[Container | Network | Volume], what: str, quiet: bool) -> int:
    count = 0
    for item in items:
        try:
            if isinstance(item, Container):
                item.remove(force=True)  # a running node goes too
            else:
                item.remove()
            count += 1
        except NotFound:
            pass
        except APIError as error:
            raise SwarmlabError(f"could not remove {what} {getattr(item, 'name', item)}: {error}") from None
    if not quiet:
        say(f"    removed {count} {what}(s)")
    return count


def lab_down(
    config: Config, timings: Timings, quiet: bool = False, purge: bool = False, machine_cache: bool = False
) -> None:
    """Remove every container, network and volume labelled with this lab's name, and the lab's
    inventory and credentials (its own state directory only); the lab's image cache, keys and CA stay
    for the next lab of this name unless `purge`; the machine's image cache, shared by every lab,
    stays unless `machine_cache` (and no other lab uses it)."""
    try:
        engine = client()
    except SwarmlabError:
        if quiet:
            return
        raise
    selector = {"label": f"{LABEL_CLUSTER}={config.cluster}"}
    what = f"remove lab {config.cluster!r}" + (" and its image cache" if purge else "")
    with timings.phase("lab-down", what + (" and the machine's image cache" if machine_cache else "")) as p:
        try:
            removed = _remove(lab_containers(engine, config.cluster), "container", quiet)
            removed += _remove(engine.networks.list(filters=selector), "network", quiet)
            removed += _remove(engine.volumes.list(filters=selector), "volume", quiet)
            if purge:
                cache = engine.volumes.list(filters={"label": f"{LABEL_CACHE}={config.cluster}"})
                removed += _remove(cache, "image cache volume", quiet)
            if machine_cache:
                removed += _remove_machine_image_cache(engine, p)
        except DockerException as error:
            raise SwarmlabError(f"the local Docker engine refused to remove lab {config.cluster!r}: {error}") from None
        # The lab's data went with its volumes, so the passwords that guarded it go too. Only the lab's
        # own state directory: a Pulumi or static target of the same cluster name keeps its own.
        paths = config.state(provider=LabProvider.name)
        for stale in (paths.inventory, paths.credentials, paths.unlock_keys):  # the swarm they unlocked is gone
            stale.unlink(missing_ok=True)
        # The stack revisions too: they name secret and config versions of a swarm that is gone.
        shutil.rmtree(paths.revisions, ignore_errors=True)
        if purge:
            # Its keys and CA too; without --purge the CA stays, so a rebuilt lab is trusted as before.
            remove_dir(paths)
        if removed:
            p.changed(f"removed {removed} object(s)")
        if not purge and not quiet:
            p.note(
                f"kept the image cache (volumes labelled {LABEL_CACHE}={config.cluster}; `fab lab-down --purge` removes it)"
            )
        if not machine_cache and not quiet:
            p.note(
                f"kept the machine's image cache (volume {IMAGE_CACHE_VOLUME}, shared by every lab; "
                "`fab lab-down --purge --machine-cache` removes it)"
            )


def _remove_machine_image_cache(engine: docker.DockerClient, progress: PhaseResult) -> int:
    """The machine's image cache, unless another lab's storage node still mounts it (that lab would
    lose its cache under it): then it stays, and the note says which lab."""
    users = [
        c.labels.get(LABEL_CLUSTER, "?")
        for c in engine.containers.list(all=True, filters={"volume": IMAGE_CACHE_VOLUME})
    ]
    if users:
        progress.note(f"kept the machine's image cache: lab(s) {', '.join(sorted(set(users)))} still use it")
        return 0
    return _remove(engine.volumes.list(filters={"label": LABEL_IMAGE_CACHE}), "machine image cache volume", True)


def _remove_volumes(engine: docker.DockerClient, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(NotFound, APIError):
            engine.volumes.get(name).remove(force=True)


def image_caches(config: Config) -> tuple[str | None, str | None]:
    """The lab's image cache (how many volumes, how big) and the machine's (its volume, how big), each
    None if there is none."""
    engine = client()
    names = {v.name for v in engine.volumes.list(filters={"label": f"{LABEL_CACHE}={config.cluster}"})}
    machine_volume = engine.volumes.list(filters={"label": LABEL_IMAGE_CACHE})
    sizes = volume_sizes(engine, names | {v.name for v in machine_volume})
    mine = sum(sizes.get(name, 0) for name in names)
    lab = f"{len(names)} volume(s) labelled {LABEL_CACHE}={config.cluster}, {mine / 2**20:.0f} MiB" if names else None
    machine = (
        f"volume {IMAGE_CACHE_VOLUME} (label {LABEL_IMAGE_CACHE}), {sizes.get(IMAGE_CACHE_VOLUME, 0) / 2**20:.0f} MiB"
        if IMAGE_CACHE_VOLUME in {v.name for v in machine_volume}
        else None
    )
    return lab, machine


def volume_sizes(engine: docker.DockerClient, names: set[str]) -> dict[str, int]:
    """Bytes in each named volume: read from its directory when this machine can (the engine is local,
    we are root), else from `docker system df`, which sizes every volume of the engine (seconds when
    other labs' engines are kept there)."""
    sizes: dict[str, int] = {}
    for name in names:
        mountpoint = Path(engine.volumes.get(name).attrs.get("Mountpoint") or "/nonexistent")
        if not (mountpoint.is_dir() and os.access(mountpoint, os.R_OK | os.X_OK)):
            every = {v["Name"]: v.get("UsageData", {}).get("Size", 0) for v in engine.df().get("Volumes") or []}
            return {name: every.get(name, 0) for name in names}
        sizes[name] = _bytes_under(mountpoint)
    return sizes


def _bytes_under(top: Path) -> int:
    total, pending = 0, [str(top)]
    while pending:
        # A running node engine writes into its volume meanwhile: what vanishes is not counted.
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def lab_status_rows(config: Config) -> list[tuple[str, str, str, str]]:
    engine = client()
    rows = []
    for container in sorted(lab_containers(engine, config.cluster), key=_listed_name):
        networks: dict[str, dict[str, str]] = container.attrs["NetworkSettings"]["Networks"] or {}
        ip = next((n.get("IPAddress", "") for n in networks.values()), "")
        rows.append((_listed_name(container), container.labels.get(LABEL_ROLE, "?"), ip, container.status))
    return rows


def _listed_name(container: Container) -> str:
    """A node's name; the VIP forwarder (two lbs), which is no node, by its own."""
    if container.labels.get(LABEL_FORWARDER):
        return FORWARDER
    return container.labels.get(LABEL_NODE, "?")
