"""The lab provider: node containers created, found and deleted by label on the local engine.

Like kind, creation is an ordered list of actions, and a failure removes what was made unless the
user asks to keep it for debugging.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import tarfile
import time
from collections.abc import Iterable, Mapping

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container
from docker.models.networks import Network
from docker.models.volumes import Volume

from cluster.config import Config
from cluster.errors import ConfigError, ConfigErrors, SwarmlabError
from cluster.inventory import Inventory, Role, dump_inventory
from cluster.lab import keys
from cluster.lab.build import EXPORT_ROOT, ensure_base_image, ensure_node_image
from cluster.lab.engine import client, ensure_engine
from cluster.lab.topology import (
    LABEL_CLUSTER,
    LABEL_NODE,
    LABEL_SHAPE,
    LabNode,
    StatePaths,
    data_volume,
    lab_inventory,
    lab_nodes,
    labels,
    network_name,
    published_ports,
    shape,
)
from cluster.progress import phase, say
from cluster.runners import Nodes
from rendering.provision import daemon_json

NODE_READY_TIMEOUT = 90
# What a nested Docker engine needs on a host where --privileged is refused (see ARCHITECTURE.md).
NESTED_CAP_ADD = ["ALL"]
NESTED_CAP_DROP = ["SYS_RESOURCE"]
NESTED_SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]


def state_paths(config: Config) -> StatePaths:
    return StatePaths(config.state_path)


def lab_containers(engine: docker.DockerClient, cluster: str) -> list[Container]:
    return list(engine.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={cluster}"}))


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


def _check_free_ports(config: Config) -> None:
    problems = []
    for key, port in (
        ("http_port", config.http_port),
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


def _check_network_free(engine: docker.DockerClient, config: Config) -> None:
    for network in engine.networks.list():
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


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _create_node(
    engine: docker.DockerClient,
    config: Config,
    node: LabNode,
    image: str,
    *,
    authorized_key: str,
    host_key: keys.KeyPair,
    registry: str,
) -> None:
    cluster = config.cluster
    volumes: dict[str, Mapping[str, str]] = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}}
    if node.role is not Role.LB:
        volumes[node.docker_volume(cluster)] = {"bind": "/var/lib/docker", "mode": "rw"}
        engine.volumes.create(node.docker_volume(cluster), labels=labels(config, node))
    if node.role in (Role.STORAGE, Role.WORKER):
        # The storage node exports this directory; workers see the same directory at the same path,
        # which stands in for an NFS mount where the kernel has no NFS client (ARCHITECTURE.md, Storage).
        volumes[data_volume(config)] = {"bind": EXPORT_ROOT, "mode": "rw"}
    ports = published_ports(config) if node.role is Role.LB else {}
    host_config = engine.api.create_host_config(
        binds=volumes,
        port_bindings={int(p.split("/")[0]): binding for p, binding in ports.items()},
        cap_add=NESTED_CAP_ADD,
        cap_drop=NESTED_CAP_DROP,
        security_opt=NESTED_SECURITY_OPT,
    )
    # `--security-opt systempaths=unconfined` is a CLI spelling; the API wants empty masked and
    # read-only path lists, so the nested engine can write /proc/sys (ip_forward, bridge settings).
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []
    created = engine.api.create_container(
        image,
        name=node.container(cluster),
        hostname=node.name,
        labels=labels(config, node),
        environment={"SWARMLAB_ROLE": node.role.value},
        ports=[int(p.split("/")[0]) for p in ports],
        host_config=host_config,
        networking_config=engine.api.create_networking_config(
            # The stubs say EndpointConfig, the API (and the SDK's own code) takes {network: config}.
            {network_name(config): engine.api.create_endpoint_config(ipv4_address=node.ip)}  # type: ignore[arg-type]
        ),
    )
    container = engine.containers.get(created["Id"])
    files = {
        "/etc/ssh/ssh_host_ed25519_key": (host_key.private_openssh, 0o600),
        "/etc/ssh/ssh_host_ed25519_key.pub": (host_key.public_openssh.encode() + b"\n", 0o644),
        "/root/.ssh/authorized_keys": (authorized_key.encode() + b"\n", 0o600),
    }
    if node.role is not Role.LB:
        files["/etc/docker/daemon.json"] = (daemon_json(registry).encode(), 0o644)
    container.put_archive("/", _tar(files))
    container.start()


def _wait_ready(inventory: Inventory) -> None:
    """Every node answers over SSH through the jump host, and every engine answers its CLI."""
    nodes = Nodes(inventory)
    try:

        def ready(node_name: str) -> None:
            node = inventory.node(node_name)
            command = "true" if node.role is Role.LB else "docker info --format '{{.ServerVersion}}'"
            deadline = time.monotonic() + NODE_READY_TIMEOUT
            while True:
                try:
                    nodes.run(node, command)
                    return
                except SwarmlabError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)

        ready(inventory.lb.name)  # the jump host first: everything else goes through it
        nodes.each([n for n in inventory.nodes if n.role is not Role.LB], lambda n: ready(n.name), "waiting for nodes")
    finally:
        nodes.close()


def lab_up(config: Config, keep: bool = False) -> Inventory:
    """Create the lab (or find it already up with the same shape) and write its inventory."""
    paths = state_paths(config)
    with phase("engine", "find or start the local Docker engine") as p:
        ensure_engine(p)
        engine = client()
    existing = _check_existing_shape(engine, config)
    nodes = lab_nodes(config)
    if existing and len(existing) == len(nodes) and paths.inventory.exists():
        with phase("lab-nodes", f"lab {config.cluster!r} already exists") as p:
            stopped = [c for c in existing if c.status != "running"]
            for container in stopped:
                container.start()
                p.changed(f"started {container.name}")
            inventory = lab_inventory(config, paths)
            _wait_ready(inventory)
        return inventory
    if existing:
        raise SwarmlabError(
            f"lab {config.cluster!r} is half there ({len(existing)} of {len(nodes)} nodes): run `fab lab-down` first"
        )
    _check_free_ports(config)
    _check_network_free(engine, config)
    with phase("images", "Debian base (debootstrap) and lab node image (provisioning scripts)") as p:
        base = ensure_base_image(engine, config, p)
        image = ensure_node_image(engine, config, base, p)
    try:
        with phase("lab-nodes", f"create {len(nodes)} node containers on {network_name(config)} ({config.cidr})") as p:
            user_key = keys.new_key_pair(f"swarmlab-{config.cluster}")
            keys.write_private(paths.private_key, user_key.private_openssh)
            host_keys = {n.name: keys.new_key_pair(n.name) for n in nodes}
            known = [
                keys.known_hosts_line(
                    str(config.bind_address) if n.role is Role.LB else n.ip,
                    config.ssh_port if n.role is Role.LB else 22,
                    host_keys[n.name].public_openssh,
                )
                for n in nodes
            ]
            keys.write_private(paths.known_hosts, ("\n".join(known) + "\n").encode())
            engine.networks.create(
                network_name(config),
                driver="bridge",
                ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(config.cidr))]),
                labels=labels(config),
            )
            engine.volumes.create(data_volume(config), labels=labels(config))
            inventory = lab_inventory(config, paths)
            registry = inventory.endpoints["registry"]
            for node in nodes:
                _create_node(
                    engine,
                    config,
                    node,
                    image,
                    authorized_key=user_key.public_openssh,
                    host_key=host_keys[node.name],
                    registry=registry,
                )
                p.changed(f"created {node.name} ({node.role.value}, {node.ip})")
        with phase("lab-ready", "wait for sshd and the Docker engines, over SSH through the lb node"):
            _wait_ready(inventory)
    except BaseException:
        if keep:
            say("lab-up failed; keeping what was made (--keep). Remove it with `fab lab-down`")
        else:
            say("lab-up failed; removing what it made (use --keep to keep it for debugging)")
            lab_down(config, quiet=True)
        raise
    keys.write_private(paths.inventory, dump_inventory(inventory).encode())
    say(f"inventory written to {paths.inventory}")
    return inventory


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


def lab_down(config: Config, quiet: bool = False) -> None:
    """Remove every container, network and volume labelled with this lab's name."""
    engine = client()
    selector = {"label": f"{LABEL_CLUSTER}={config.cluster}"}
    with phase("lab-down", f"remove lab {config.cluster!r}") as p:
        removed = _remove(lab_containers(engine, config.cluster), "container", quiet)
        removed += _remove(engine.networks.list(filters=selector), "network", quiet)
        removed += _remove(engine.volumes.list(filters=selector), "volume", quiet)
        # The lab's data went with its volumes, so the passwords that guarded it go too.
        paths = state_paths(config)
        for stale in (paths.inventory, paths.credentials):
            stale.unlink(missing_ok=True)
        if removed:
            p.changed(f"removed {removed} object(s)")


def lab_status_rows(config: Config) -> list[tuple[str, str, str, str]]:
    engine = client()
    rows = []
    for container in sorted(lab_containers(engine, config.cluster), key=lambda c: c.labels.get(LABEL_NODE, "")):
        networks: dict[str, dict[str, str]] = container.attrs["NetworkSettings"]["Networks"] or {}
        ip = next((n.get("IPAddress", "") for n in networks.values()), "")
        rows.append(
            (container.labels.get(LABEL_NODE, "?"), container.labels.get("swarmlab.role", "?"), ip, container.status)
        )
    return rows
