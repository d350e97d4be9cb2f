"""rehearsal-up and rehearsal-down: node containers that boot like OpenStack VMs on the local engine.

Each node is a container of the rehearsal image with systemd as PID 1 (REHEARSAL-NOTES.md: tmpfs on
/run, the host's cgroup tree, the lab nodes' capabilities), its hostname, a volume at /var/lib/docker,
the lab's labels, and a NoCloud seed holding exactly the user data the Pulumi program rendered for it.
Nothing else is put in: cloud-init writes the host key, daemon.json and the provisioning script, and
runs it, as on OpenStack. The storage node's Cinder volume is a file here, attached as a block device
through a loop device at the path the user data waits for.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

import topology
from cluster.archive import tar_bytes
from cluster.config import Config
from cluster.errors import SwarmlabError, tail
from cluster.executor import Executor
from cluster.inventory import Inventory, Node, Role, parse_inventory
from cluster.lab import keys
from cluster.lab.engine import client, create_node_container, ensure_engine
from cluster.lab.layout import LABEL_CLUSTER, LABEL_NODE, LABEL_ROLE, one_lb_only, published_ports
from cluster.lab.provider import CREATE_PARALLEL
from cluster.lab.rehearsal import plan
from cluster.lab.rehearsal.image import ensure_rehearsal_image
from cluster.lab.rehearsal.program import ProgramRun, run_program
from cluster.lab.rehearsal.provider import NAME
from cluster.lab.rehearsal.stack import outputs_path, read_outputs
from cluster.local import run_local
from cluster.operations import Plan, Wait
from cluster.parallel import at_once
from cluster.progress import PhaseResult, Timings, say
from cluster.runners import SshRunner
from cluster.state import StatePaths, remove_dir, write_private
from cluster.waiting import Verdict, wait_until

LABEL_KIND = "swarmlab.kind"  # "rehearsal": what tells its containers from a lab's of the same name
FIRST_BOOT_TIMEOUT = 900  # cloud-init installs docker.io and the role's packages from the mirror
SSH_TIMEOUT = 120
# cloud-init's verdict once it is done: `status` and the errors of every stage.
STATUS_COMMAND = ["cloud-init", "status", "--wait", "--long"]
RESULT_FILE = "/run/cloud-init/result.json"


@dataclass
class Rehearsal:
    config: Config
    engine: docker.DockerClient
    paths: StatePaths
    image: str = ""
    program: ProgramRun | None = None
    loop_device: str = ""
    started: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> plan.Names:
        return plan.Names(self.config.cluster)

    @property
    def nodes(self) -> tuple[topology.PlannedNode, ...]:
        return topology.plan_nodes(self.config.cidr, self.config.managers, self.config.workers)


def labels(config: Config, node: topology.PlannedNode | None = None) -> dict[str, str]:
    found = {LABEL_CLUSTER: config.cluster, LABEL_KIND: NAME}
    if node is not None:
        found |= {LABEL_ROLE: node.role, LABEL_NODE: node.name}
    return found


def containers(engine: docker.DockerClient, cluster: str) -> list[Container]:
    selector = [f"{LABEL_CLUSTER}={cluster}", f"{LABEL_KIND}={NAME}"]
    return list(engine.containers.list(all=True, filters={"label": selector}))


# --- the phases of rehearsal-up ------------------------------------------------------------------


def foreign_volumes(r: Rehearsal) -> list[str]:
    """The node volumes this rehearsal would create that exist already and are not a rehearsal's. A lab
    of the same name keeps its nodes' engines in volumes of these names (its image cache); Docker would
    hand them over as they are, and a rehearsal node would boot with that engine's state, swarm and all."""
    wanted = {r.names.docker_volume(node.name) for node in r.nodes}
    found = r.engine.volumes.list(filters={"name": f"swarmlab-{r.config.cluster}-"})
    return sorted(v.name for v in found if v.name in wanted and (v.attrs.get("Labels") or {}).get(LABEL_KIND) != NAME)


def check_free(r: Rehearsal, progress: PhaseResult) -> None:
    if containers(r.engine, r.config.cluster):
        raise SwarmlabError(f"rehearsal {r.config.cluster!r} is already up: run `fab rehearsal-down` first")
    foreign = foreign_volumes(r)
    if foreign:
        raise SwarmlabError(
            f"volumes {', '.join(foreign)} exist and are not a rehearsal's: a lab named {r.config.cluster!r} keeps "
            "its nodes' engines in them, and a rehearsal node would boot with that engine's swarm. Nothing was made. "
            f"Fix: another name for the rehearsal (SWARMLAB_CLUSTER), or `SWARMLAB_CLUSTER={r.config.cluster} "
            "fab lab-down --purge` if that lab's image cache may go"
        )
    for network in r.engine.networks.list():
        for pool in (network.attrs.get("IPAM") or {}).get("Config") or []:
            subnet = pool.get("Subnet") or ""
            if subnet and ":" not in subnet and ipaddress.ip_network(subnet).overlaps(r.config.cidr):
                raise SwarmlabError(
                    f"cidr {r.config.cidr} overlaps Docker network {network.name} ({subnet}): "
                    "choose another range (SWARMLAB_CIDR)"
                )
    progress.note(f"{r.config.cidr} overlaps no Docker network")


def build_image(r: Rehearsal, progress: PhaseResult) -> None:
    r.image = ensure_rehearsal_image(r.engine, r.config, progress)


def run_the_program(r: Rehearsal, progress: PhaseResult) -> None:
    """The operator's key pair, then the Pulumi program under mocks: user data, host keys, inventory."""
    user_key = keys.new_key_pair(f"swarmlab-{r.config.cluster}")
    write_private(r.paths.private_key, user_key.private_openssh)
    stack = plan.stack_config(r.config, user_key.public_openssh, str(r.paths.private_key))
    r.program = run_program(stack, plan.floating_ip(r.config), r.paths.root / "program")
    outputs = {"inventory": r.program.outputs["inventory"], "known_hosts": r.program.outputs["known_hosts"]}
    write_private(outputs_path(r.config), json.dumps(outputs, indent=2).encode())
    progress.changed(
        f"ran the Pulumi program under mocks: user data for {len(r.program.servers)} servers, "
        f"outputs in {outputs_path(r.config)}"
    )


def create_network(r: Rehearsal, progress: PhaseResult) -> None:
    r.engine.networks.create(
        r.names.network,
        driver="bridge",
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(r.config.cidr))]),
        labels=labels(r.config),
    )
    progress.changed(f"network {r.names.network} ({r.config.cidr})")


def attach_volume(r: Rehearsal, progress: PhaseResult) -> None:
    """The storage node's Cinder volume: a sparse file behind a loop device (blank the first time)."""
    backing = r.paths.root / r.names.volume_file
    if not backing.exists():
        with backing.open("wb") as image:
            image.truncate(plan.VOLUME_SIZE_GIB * 2**30)
    r.loop_device = run_local(["losetup", "--find", "--show", str(backing)]).strip()
    progress.changed(f"volume {backing} ({plan.VOLUME_SIZE_GIB} GiB, sparse) on {r.loop_device}")


# This machine's kernel has no NFS client (docs/cloud.md), so a worker cannot mount the storage node's
# export. What stands in: this machine mounts the storage volume itself (the same block device, so the
# kernel gives the storage node's own filesystem, not a copy) on a shared mount point that every worker
# has at DATA_ROOT with slave propagation; the export directory is then the same directory on the
# storage node and on every worker, and deploy-stack's `auto` storage mode finds it (shared-dir). Where
# the kernel has an NFS client, `auto` still chooses nfs.


def share_point(r: Rehearsal) -> str:
    return str(r.paths.root / r.names.volume_share)


def mounts_at(path: str, mountinfo: str = "/proc/self/mountinfo") -> int:
    """How many mounts are stacked on `path` (os.path.ismount misses a directory bound onto itself)."""
    with open(mountinfo) as table:
        return sum(1 for line in table if line.split()[4] == path)


def prepare_volume_share(r: Rehearsal, progress: PhaseResult) -> None:
    """The workers' view of the storage volume: an empty shared mount point until the volume is formatted."""
    if not r.loop_device:
        progress.note("no storage volume: the workers get no share")
        return
    share = share_point(r)
    os.makedirs(share, mode=0o755, exist_ok=True)
    if not mounts_at(share):
        run_local(["mount", "--bind", share, share])
    run_local(["mount", "--make-shared", share])
    progress.changed(f"{share}: a shared mount point, to be the workers' {topology.DATA_ROOT}")


def share_volume(r: Rehearsal, progress: PhaseResult) -> None:
    """The storage volume, formatted by the storage node's first boot, mounted on the share point."""
    if not r.loop_device:
        return
    run_local(["mount", r.loop_device, share_point(r)])
    progress.changed(f"{r.loop_device} mounted on {share_point(r)}: the workers' {topology.DATA_ROOT}")


def unshare_volume(paths: StatePaths, names: plan.Names) -> int:
    """Unmount the volume and the share point (at most the two mounts prepare and share made)."""
    share, unmounted = str(paths.root / names.volume_share), 0
    while unmounted < 2 and mounts_at(share):
        run_local(["umount", share])
        unmounted += 1
    if mounts_at(share):  # never remove the state directory through a mounted volume
        raise SwarmlabError(f"{share} is still mounted: unmount it (`umount {share}`), then rehearsal-down again")
    return unmounted


def _create_node(r: Rehearsal, node: topology.PlannedNode) -> None:
    assert r.program is not None
    config, engine = r.config, r.engine
    role = Role(node.role)
    server = r.program.servers[node.name]
    binds: dict[str, Mapping[str, str]] = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}}
    if role is not Role.LB:
        volume = engine.volumes.create(r.names.docker_volume(node.name), labels=labels(config, node))
        binds[volume.name] = {"bind": plan.DOCKER_DIR, "mode": "rw"}
    if role is Role.WORKER and r.loop_device:
        binds[share_point(r)] = {"bind": topology.DATA_ROOT, "mode": "rw,rslave"}
    devices = []
    device = plan.data_device(server.user_data)
    if device is not None:
        if not r.loop_device:
            raise SwarmlabError(f"{node.name} waits for a data volume at {device} and none is attached")
        # At the path the user data waits for, and as itself (blkid finds filesystems through /proc/partitions).
        devices = [f"{r.loop_device}:{device}:rwm", f"{r.loop_device}:{r.loop_device}:rwm"]
    container = create_node_container(
        engine,
        r.image,
        name=r.names.container(node.name),
        hostname=node.name,
        ip=node.ip,
        network=r.names.network,
        labels=labels(config, node),
        binds=binds,
        ports=published_ports(config) if role is Role.LB else {},
        tmpfs=plan.TMPFS,
        devices=devices,
        restart_policy=plan.REBOOT_POLICY,
    )
    instance_id = f"{config.cluster}-{node.name}"
    container.put_archive(
        "/", tar_bytes(plan.seed_files(instance_id, node.name, server.user_data, r.program.public_keys))
    )
    r.started[node.name] = time.monotonic()
    container.start()


def create_nodes(r: Rehearsal, progress: PhaseResult) -> None:
    created = at_once(r.nodes, lambda node: _create_node(r, node), limit=CREATE_PARALLEL)
    for node, _ in created.results:
        progress.changed(f"started {node.name} ({node.role}, {node.ip})")
    if created.failures:
        raise created.failures[0][1]  # the first failure stops rehearsal-up; its containers stay for debugging


def _first_boot(r: Rehearsal, node: topology.PlannedNode) -> float:
    """Seconds from container start to cloud-init done; raises if cloud-init reported an error."""
    container = r.engine.containers.get(r.names.container(node.name))
    result: list[list[str]] = []

    def done() -> Verdict:
        _, text = exec_text(container, STATUS_COMMAND)
        if "status: done" not in text and "status: error" not in text:
            return Verdict.waiting(text.strip()[-200:] or "no answer from cloud-init yet")
        errors = cloud_init_errors(container)
        if errors is None:  # seen once: `status` said done before the result file could be read
            return Verdict.waiting(f"{RESULT_FILE} not readable yet")
        result.append(errors)
        return Verdict.ready()

    wait_until(done, what=f"cloud-init done on {node.name}", timeout=FIRST_BOOT_TIMEOUT, interval=2)
    seconds = time.monotonic() - r.started[node.name]
    if result[-1]:
        _, log = exec_text(container, ["tail", "-n", "40", "/var/log/cloud-init-output.log"])
        raise SwarmlabError(f"cloud-init on {node.name} finished with errors: {result[-1]}\n{tail(log)}")
    return seconds


def exec_text(container: Container, command: list[str]) -> tuple[int, str]:
    code, output = container.exec_run(command)
    return (-1 if code is None else int(code)), output.decode(errors="replace") if isinstance(output, bytes) else ""


def cloud_init_errors(container: Container) -> list[str] | None:
    """The errors of every stage cloud-init ran (its result file); None while it cannot be read."""
    code, text = exec_text(container, ["cat", RESULT_FILE])
    try:
        document = json.loads(text) if code == 0 else None
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    errors: list[str] = document.get("v1", {}).get("errors") or []
    return errors


def wait_first_boot(r: Rehearsal, progress: PhaseResult) -> None:
    """Every node's cloud-init done without error; each role's first boot time (the slowest of the role)."""
    booted = at_once(r.nodes, lambda node: _first_boot(r, node), limit=len(r.nodes))
    booted.raise_failures("first boot", lambda node: node.name)
    seconds = dict(booted.results)
    for role in ("lb", "storage", "manager", "worker"):
        times = [s for n, s in seconds.items() if n.role == role]
        if times:
            progress.note(f"first boot of {role}: {max(times):.1f} s (container start to cloud-init done)")
    progress.changed(f"{len(seconds)} nodes booted and provisioned by cloud-init")


def inventory_of(config: Config) -> Inventory:
    return parse_inventory(json.dumps(read_outputs(config)["inventory"]), "rehearsal stack output inventory")


def wait_ssh(r: Rehearsal, progress: PhaseResult) -> None:
    """Every node answers over SSH as the tasks reach it: through lb-1, pinned keys, reject policy."""
    inventory = inventory_of(r.config)
    runner = SshRunner(inventory)
    try:

        def ready(node: Node) -> None:
            def answers() -> Verdict:
                runner.run(node, "true")
                return Verdict.ready()

            wait_until(answers, what=f"{node.name} answers over SSH", timeout=SSH_TIMEOUT)

        ready(inventory.lb)
        runner.each([n for n in inventory.nodes if n.role is not Role.LB], ready, "waiting for SSH")
    finally:
        runner.close()
    progress.note(f"{len(inventory.nodes)} nodes answer over SSH through {inventory.lb.name}, host keys pinned")


UP_PHASES = (
    ("rehearsal-checks", "no rehearsal of this name, the network range free", check_free),
    ("rehearsal-image", "Debian cloud image: debootstrap base plus systemd and cloud-init", build_image),
    ("pulumi-program", "the Pulumi program under mocks: user data, host keys, inventory", run_the_program),
    ("rehearsal-network", "the rehearsal's bridge network", create_network),
    ("storage-volume", "the storage node's volume (a file on a loop device)", attach_volume),
    ("volume-share", "a shared mount point for the workers' view of the volume", prepare_volume_share),
    ("rehearsal-nodes", "one container per server, NoCloud seed in, systemd as PID 1", create_nodes),
    ("first-boot", "cloud-init on every node: host key, write_files, provisioning", wait_first_boot),
    ("volume-to-workers", "the storage volume on the share (no NFS client in this kernel)", share_volume),
    ("rehearsal-ssh", "every node over SSH through the lb node, pinned keys", wait_ssh),
)


def make_rehearsal(config: Config, timings: Timings) -> Inventory:
    one_lb_only(config, "the rehearsal")
    with timings.phase("engine", "find the local Docker engine") as p:
        ensure_engine(p)
        engine = client()
    r = Rehearsal(config, engine, config.state(provider=NAME))
    try:
        for name, description, action in UP_PHASES:
            with timings.phase(name, description) as p:
                try:
                    action(r, p)
                except DockerException as error:
                    raise SwarmlabError(f"{name}: the local Docker engine said: {error}") from None
    except BaseException:
        say("rehearsal-up failed; its containers stay for debugging: `fab rehearsal-down` removes them")
        raise
    return inventory_of(config)


# --- rehearsal-down ------------------------------------------------------------------------------


def _detach_volume(paths: StatePaths, names: plan.Names) -> int:
    backing = paths.root / names.volume_file
    if not backing.exists():
        return 0
    attached = run_local(["losetup", "--associated", str(backing), "--noheadings", "--output", "NAME"]).split()
    for device in attached:
        run_local(["losetup", "--detach", device])
    return len(attached)


def remove_rehearsal(config: Config, timings: Timings) -> None:
    """Remove the rehearsal's containers, network and volumes (by label), its loop device and state."""
    engine = client()
    selector = {"label": [f"{LABEL_CLUSTER}={config.cluster}", f"{LABEL_KIND}={NAME}"]}
    paths = config.state(provider=NAME)
    with timings.phase("rehearsal-down", f"remove rehearsal {config.cluster!r}") as p:
        try:
            for container in containers(engine, config.cluster):
                container.remove(force=True)
                p.changed(f"removed container {container.name}")
            for network in engine.networks.list(filters=selector):
                network.remove()
                p.changed(f"removed network {network.name}")
            for volume in engine.volumes.list(filters=selector):
                volume.remove(force=True)
                p.changed(f"removed volume {volume.name}")
        except (APIError, NotFound, ImageNotFound) as error:
            raise SwarmlabError(f"could not remove rehearsal {config.cluster!r}: {error}") from None
        unmounted = unshare_volume(paths, plan.Names(config.cluster))
        if unmounted:
            p.changed(f"unmounted the workers' share of the storage volume ({unmounted} mount(s))")
        detached = _detach_volume(paths, plan.Names(config.cluster))
        if detached:
            p.changed(f"detached {detached} loop device(s)")
        if paths.root.exists():
            remove_dir(paths)
            p.changed(f"removed {paths.root}")


# --- a stopped server started again (fab recover) ------------------------------------------------

BOOTED_COMMAND = "systemctl is-system-running --wait 2>/dev/null || true"


def booted(output: str) -> Verdict:
    """Boot is over: `running`, or `degraded` (the storage node's rpc_pipefs mount fails in a container)."""
    state = output.strip()
    return Verdict.ready() if state in ("running", "degraded") else Verdict.waiting(f"systemd says {state or '?'}")


def start_node(config: Config, node: Node, executor: Executor, progress: PhaseResult) -> bool:
    """What a cloud console's "start" does for a stopped server: its container started again, then
    wait until systemd has booted it. A removed container is not re-made (on a cloud `pulumi up`
    re-creates the server; here `make rehearsal-down` and `make rehearsal`)."""
    found = next((c for c in containers(client(), config.cluster) if c.labels.get(LABEL_NODE) == node.name), None)
    if found is None:
        progress.note(f"{node.name} has no container: remake the rehearsal (`make rehearsal-down`, `make rehearsal`)")
        return False
    if found.status == "running":
        progress.note(f"the container of {node.name} runs")
        return True
    if executor.dry_run:
        progress.planned(f"would start the stopped container of {node.name}", True)
        return False
    found.start()
    executor.runner.forget(node)
    progress.changed(f"started the stopped container of {node.name}")
    executor.execute(Plan((Wait(node.name, BOOTED_COMMAND, booted, f"{node.name} booted", SSH_TIMEOUT),)), progress)
    return True
