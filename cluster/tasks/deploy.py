"""deploy-stack from end to end: values, images, storage, secrets, render, deploy, wait, prune."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config import Config
from cluster.credentials import load_or_create, read_secret_file, secret_name
from cluster.errors import SwarmlabError
from cluster.inventory import Node
from cluster.progress import phase
from cluster.runners import Nodes
from cluster.stacks import Route, StackSpec, stack_spec
from cluster.tasks.images import build_images
from cluster.tasks.secrets import ensure_secrets, prune_secrets
from cluster.tasks.stack import StackInput, deploy, render_stack
from cluster.values import Values, load_values
from nfs.model import CLIENT_OPTIONS, EXPORT_DIR, PSEUDO_PATH

# Data directories on the export, owned by the uid each image runs its server as.
DATA_OWNERS = {"postgres": 999, "redis": 997}


@dataclass(frozen=True)
class Stack:
    spec: StackSpec
    values: Values | None

    @property
    def routes(self) -> tuple[Route, ...]:
        mailsink = self.values is not None and self.values.mailsink
        return tuple(r for r in self.spec.routes if mailsink or not r.lab_only)


def configured_stack(config: Config) -> Stack:
    spec = stack_spec(config.stack)
    values = load_values(spec.values_dir, config.environment) if spec.values_dir else None
    return Stack(spec, values)


def storage_mode(nodes: Nodes, wanted: str) -> str:
    """nfs where every worker's kernel mounts NFS; else, in the lab only, the shared export directory."""
    if wanted != "auto":
        return wanted
    kernels = nodes.each(
        nodes.inventory.workers,
        lambda n: nodes.run(n, "grep -qw nfs4 /proc/filesystems || modprobe -q nfs4", check=False).ok,
        "nfs probe",
    )
    if all(kernels.values()):
        return "nfs"
    if nodes.inventory.provider != "lab":
        missing = ", ".join(sorted(name for name, ok in kernels.items() if not ok))
        raise SwarmlabError(
            f"workers without an NFS client in their kernel: {missing}; install nfs-common there, or set storage: nfs"
        )
    return "shared-dir"


def prepare_data_dirs(nodes: Nodes, storage: Node) -> None:
    commands = [
        f"mkdir -p {EXPORT_DIR}/{name} && chown {uid}:{uid} {EXPORT_DIR}/{name}" for name, uid in DATA_OWNERS.items()
    ]
    nodes.run(storage, " && ".join(commands))


def stack_secrets(config: Config, nodes: Nodes, values: Values) -> dict[str, str]:
    credentials = load_or_create(config.state_root / nodes.inventory.cluster / "credentials")
    found = {key: credentials[key] for key in ("api_password", "db_password", "rabbitmq_password")}
    if values.smtp.user:
        found["smtp_password"] = read_secret_file(values.smtp.password_file, "smtp.password_file")
    return found


def deploy_configured_stack(nodes: Nodes, config: Config, leader: Node, dry_run: bool = False) -> str:
    """Returns the storage mode used ('' for stacks without storage)."""
    stack = configured_stack(config)
    spec, values = stack.spec, stack.values
    images = build_images(nodes, config, spec.images)
    data = StackInput(images=images, ports={r.name: r.port for r in spec.routes})
    mode = ""
    if values is not None:
        storage = nodes.inventory.storage
        if storage is None:
            raise SwarmlabError(f"stack {spec.name} keeps its data on the storage node, and the inventory has none")
        with phase("stack-inputs", "storage mode, data directories and Docker secrets") as p:
            mode = storage_mode(nodes, values.storage)
            p.note(f"storage mode: {mode}")
            prepare_data_dirs(nodes, storage)
            secret_values = stack_secrets(config, nodes, values)
            if dry_run:
                names = {key: secret_name(spec.name, key, value) for key, value in secret_values.items()}
            else:
                names = ensure_secrets(nodes, leader, spec.name, secret_values, p)
        if mode == "nfs":
            volumes = {name: f"{name}-data" for name in DATA_OWNERS}
        else:
            volumes = {name: f"{EXPORT_DIR}/{name}" for name in DATA_OWNERS}
        data = StackInput(
            images={**images, **values.images},
            values=values,
            ports=data.ports,
            volumes=volumes,
            secrets=names,
            storage_mode=mode,
            nfs_options=f"addr={storage.private_ip},{CLIENT_OPTIONS}",
            nfs_pseudo=PSEUDO_PATH,
        )
    deploy(nodes, leader, spec, render_stack(spec, data), dry_run=dry_run)
    if values is not None and not dry_run:
        with phase("prune-secrets", "remove secret versions no service uses") as p:
            prune_secrets(nodes, leader, spec.name, data.secrets, p)
    return mode
