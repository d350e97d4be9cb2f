"""deploy-stack's own phases for any workload bundle: whose stack it is, storage, secrets, render,
deploy, wait; then, once HAProxy routes it, prune. Generic: everything about the workload comes from
its bundle. The images before, the routes and the prune after are other tasks' steps
(cluster/flows.py puts them in order)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

import nfs.model as nfs
import topology
from cluster.credentials import NAME_KEY, fingerprint, load_existing, load_or_create, read_secret_file
from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.daemons import file_content
from cluster.facts.listings import CONFIG_NAMES, SECRET_NAMES, stack_secret_owners
from cluster.facts.services import stack_services
from cluster.facts.storage import NFS_CLIENT_COMMAND, export_id, owners
from cluster.inventory import Inventory, Node
from cluster.plans.configs import (
    check_mounts,
    config_mounts,
    config_name,
    plan_configs,
)
from cluster.plans.stack import (
    REMOTE_STACKS,
    StateIdentity,
    check_placement,
    choose_storage_mode,
    foreign_owner,
    plan_data_dirs,
    plan_deploy,
    plan_secrets,
    secret_name,
    stack_diff,
)
from cluster.progress import PhaseResult, say
from cluster.session import Session
from cluster.workload import Workload, lookup
from topology import EXPORT_DIR


@dataclass(frozen=True)
class StackInput:
    """Everything a stack template may use; secrets are names of Docker secrets, never values."""

    images: dict[str, str]
    values: Any = None
    ports: dict[str, int] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    storage_mode: str = ""
    nfs_options: str = ""
    nfs_pseudo: str = ""
    configs: dict[str, str] = field(default_factory=dict)  # bundle config -> Docker config name
    config_mounts: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # filled by render_stack
    # Whom a service believes X-Forwarded-For from: HAProxy's address in the cluster network, and
    # the overlay pool (for a service that other tasks call on a user's behalf, e.g. the UI the API).
    lb_addresses: tuple[str, ...] = ()
    overlay_pool: str = ""


@dataclass(frozen=True)
class NodeAddress:
    name: str
    role: str
    ip: str


@dataclass(frozen=True)
class ConfigInput:
    """What a bundle's `.j2` config file may use: the values, and where the cluster's nodes and their
    metrics endpoints are (e.g. for a Prometheus configuration)."""

    stack: str
    values: Any
    managers: tuple[NodeAddress, ...]
    workers: tuple[NodeAddress, ...]
    lb: NodeAddress  # lb-1 (the jump host)
    ports: dict[str, int]
    engine_metrics_port: int = topology.ENGINE_METRICS_PORT
    lb_metrics_port: int = topology.LB_METRICS_PORT
    lbs: tuple[NodeAddress, ...] = ()  # every lb node (two with lb_count 2): each runs HAProxy's exporter


def config_input(inventory: Inventory, workload: Workload) -> ConfigInput:
    def address(node: Node) -> NodeAddress:
        return NodeAddress(node.name, node.role.value, str(node.private_ip))

    return ConfigInput(
        stack=workload.name,
        values=workload.values,
        managers=tuple(address(n) for n in inventory.managers),
        workers=tuple(address(n) for n in inventory.workers),
        lb=address(inventory.lb),
        lbs=tuple(address(n) for n in inventory.lbs),
        ports={r.name: r.port for r in workload.manifest.routes},
    )


def config_contents(inventory: Inventory, workload: Workload) -> dict[str, tuple[str, str]]:
    """Each enabled config of the bundle: its Docker name (a hash of the content) and its content."""
    context = config_input(inventory, workload)
    found = {}
    for config in workload.configs:
        content = workload.config_content(config, context)
        found[config.name] = (config_name(workload.name, config.name, content), content)
    return found


@dataclass(frozen=True)
class Storage:
    mode: str = ""
    volumes: dict[str, str] = field(default_factory=dict)
    nfs_options: str = ""
    nfs_pseudo: str = ""


def render_stack(workload: Workload, data: StackInput) -> str:
    data = dataclasses.replace(data, config_mounts=config_mounts(workload.configs))
    text = workload.render(data)
    stack = yaml.safe_load(text)  # a template bug shows here, not as a confusing `docker stack deploy` error
    check_mounts(stack, workload.configs, data.configs, f"{workload.directory.name}/{workload.manifest.template}")
    return text


def secret_values(session: Session, workload: Workload) -> tuple[dict[str, str], str]:
    """The workload's secret values (generated once, or read from the files its values name) and the
    cluster's key for secret names."""
    wanted = workload.manifest.secrets
    credentials = load_or_create(session.state.credentials, wanted.generated)
    found = {name: credentials[name] for name in wanted.generated}
    for secret in workload.file_secrets:
        path = lookup(workload.values, secret.path_value)
        found[secret.name] = read_secret_file(str(path or ""), f"{secret.name} ({secret.path_value} in the values)")
    return found, credentials[NAME_KEY]


def prepare_storage(session: Session, workload: Workload, progress: PhaseResult) -> Storage:
    """Storage mode, and the data directories on the export owned by their servers' uids."""
    data = workload.manifest.data
    if not data:
        return Storage()
    inventory, runner = session.inventory, session.runner
    storage, export = inventory.storage, inventory.nfs
    if storage is None or export is None:
        raise SwarmlabError(f"stack {workload.name} keeps its data on the storage node, and the inventory has none")
    clients = runner.each(
        inventory.workers, lambda n: runner.run(n, NFS_CLIENT_COMMAND, check=False).ok, "probing NFS clients"
    )
    shared_id = read(runner, storage, export_id(EXPORT_DIR))
    shared = runner.each(
        inventory.workers,
        lambda n: bool(shared_id) and read(runner, n, export_id(EXPORT_DIR)) == shared_id,
        "probing the shared export directory",
    )
    mode = choose_storage_mode(workload.storage_mode, clients, shared)
    progress.note(f"storage mode: {mode}")
    paths = [f"{EXPORT_DIR}/{d.name}" for d in data]
    owners_now = read(runner, storage, owners(paths))
    session.executor().execute(plan_data_dirs(storage.name, EXPORT_DIR, data, owners_now), progress)
    if mode == "nfs":
        volumes = {d.name: f"{d.name}-data" for d in data}
    else:
        volumes = {d.name: f"{EXPORT_DIR}/{d.name}" for d in data}
    return Storage(mode, volumes, nfs.volume_options(export.host), export.path)


@dataclass(frozen=True)
class DeployedStack:
    """What a deploy used, for the notes, the revision it records and the prune after it: the storage
    mode ('' if none), and the Docker secret and config names (by the bundle's keys) the stack refers to."""

    storage_mode: str
    secrets: dict[str, str]
    configs: dict[str, str]


@dataclass(frozen=True)
class PreparedStack:
    """A stack ready to deploy: its inputs are on the swarm, its file rendered."""

    rendered: str
    deployed: DeployedStack


def state_identity(session: Session) -> StateIdentity:
    """This run's state directory, as the labels on the secrets it creates name it."""
    key = load_existing(session.state.credentials).get(NAME_KEY, "")
    return StateIdentity(fingerprint(key) if key else "", str(session.state.root))


def check_owner(session: Session, workload: Workload, leader: Node) -> None:
    """Refuse, before anything changes, a stack that another state directory (other credentials) deployed."""
    credentials = load_existing(session.state.credentials)
    key = credentials.get(NAME_KEY)
    ours = {
        name: secret_name(workload.name, name, credentials[name], key) if key and credentials.get(name) else None
        for name in workload.manifest.secrets.generated
    }
    mounted = read(session.runner, leader, stack_secret_owners(workload.name))
    problem = foreign_owner(workload.name, state_identity(session), mounted, ours)
    if problem:
        raise SwarmlabError(problem)


def prepare_stack(session: Session, workload: Workload, leader: Node, images: dict[str, str]) -> PreparedStack:
    """The stack-inputs phase (storage, secrets, configs), then the stack rendered with them."""
    runner, name = session.runner, workload.name
    with session.phase("stack-inputs", "storage mode, data directories, Docker secrets and configs") as p:
        storage = prepare_storage(session, workload, p)
        values, name_key = secret_values(session, workload)
        names = {key: secret_name(name, key, value, name_key) for key, value in values.items()}
        existing = set(read(runner, leader, SECRET_NAMES))
        owner = StateIdentity(fingerprint(name_key), str(session.state.root))
        session.executor(secrets=values).execute(plan_secrets(leader.name, names, existing, owner), p)
        configs = config_contents(session.inventory, workload)
        if configs:
            listed_configs = set(read(runner, leader, CONFIG_NAMES))
            wanted = dict(configs.values())
            session.executor().execute(plan_configs(leader.name, wanted, listed_configs), p)
    data = StackInput(
        images={**images, **workload.image_overrides},
        values=workload.values,
        ports={r.name: r.port for r in workload.manifest.routes},
        volumes=storage.volumes,
        secrets=names,
        storage_mode=storage.mode,
        nfs_options=storage.nfs_options,
        nfs_pseudo=storage.nfs_pseudo,
        configs={key: name for key, (name, _) in configs.items()},
        lb_addresses=session.inventory.lb_addresses,
        overlay_pool=str(session.config.overlay_pool),
    )
    deployed = DeployedStack(storage.mode, names, {key: config for key, (config, _) in configs.items()})
    return PreparedStack(render_stack(workload, data), deployed)


def deploy_rendered(session: Session, name: str, leader: Node, rendered: str) -> None:
    """Deploy a rendered stack (a fresh one, or a recorded revision's) and wait until it is healthy."""
    runner = session.runner
    check_placement(name, yaml.safe_load(rendered) or {}, len(session.inventory.workers))
    with session.phase("deploy-stack", f"deploy stack {name!r} from {leader.name} and wait for healthy replicas") as p:
        deployed = read(runner, leader, file_content(f"{REMOTE_STACKS}/{name}.yml"), check=False)
        if session.dry_run:
            say(rendered)
            say(stack_diff(deployed, rendered) or "# no difference from what is deployed")
        states = read(runner, leader, stack_services(name), check=False)
        session.executor().execute(plan_deploy(leader.name, name, rendered, deployed, states), p)
