"""Deploying a workload, pure: storage mode, data directories, Docker secrets, the stack itself and
the wait for healthy replicas, each from facts to operations."""

from __future__ import annotations

import difflib
import hmac
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

import topology
from cluster.errors import SwarmlabError
from cluster.facts.listings import STATE_DIR_LABEL, STATE_LABEL, SecretOwner
from cluster.facts.services import Service, stack_replicas, stack_services
from cluster.operations import Operation, Plan, Run, Wait, Write
from cluster.plans.anchor import ANCHOR_SERVICE, ANCHOR_TIMEOUT, anchor_stack, anchor_verdict
from cluster.waiting import Verdict
from cluster.workload import DataDir

REMOTE_STACKS = f"{topology.NODE_WORK_DIR}/stacks"
CONVERGE_TIMEOUT = 300


def choose_storage_mode(wanted: str, nfs_clients: Mapping[str, bool], shared: Mapping[str, bool]) -> str:
    """nfs where every worker's kernel mounts NFS; else the export directory itself, where every worker
    sees it at the same path (the lab mounts it into its workers: a fact read, not a provider's name)."""
    if wanted != "auto":
        return wanted
    if all(nfs_clients.values()):
        return "nfs"
    if all(shared.values()):
        return "shared-dir"
    missing = ", ".join(sorted(name for name, ok in nfs_clients.items() if not ok and not shared.get(name)))
    raise SwarmlabError(
        f"workers without an NFS client in their kernel: {missing}; install nfs-common there "
        "(or set storage: nfs in the values to mount anyway)"
    )


def plan_data_dirs(storage: str, export_dir: str, data: Sequence[DataDir], owners: Mapping[str, int]) -> Plan:
    """Each data directory on the export, owned by the uid its server runs as (created or fixed once)."""
    runs = []
    for item in data:
        path = f"{export_dir}/{item.name}"
        if owners.get(path) != item.owner:
            was = "missing" if path not in owners else f"owned by {owners[path]}"
            runs.append(
                Run(
                    storage,
                    f"mkdir -p {path} && chown {item.owner}:{item.owner} {path}",
                    f"{path} owned by {item.owner} (was {was})",
                )
            )
    return Plan(tuple(runs))


def secret_name(stack: str, key: str, value: str, cluster_key: str) -> str:
    """Docker secrets are immutable: a changed value gets a new name, and services roll onto it.

    The name carries an HMAC of the value under a per-cluster key, so it tells nothing about the value.
    """
    digest = hmac.new(cluster_key.encode(), f"{key}\0{value}".encode(), "sha256").hexdigest()[:12]
    return f"{stack}_{key}_{digest}"


@dataclass(frozen=True)
class StateIdentity:
    """Which state directory drives a deploy: a fingerprint of its credentials (never the key itself)
    and its path, put as labels on every secret it creates."""

    fingerprint: str  # '' when the state directory has no credentials yet
    directory: str

    def labels(self) -> str:
        return f" --label {STATE_LABEL}={self.fingerprint} --label {shlex.quote(f'{STATE_DIR_LABEL}={self.directory}')}"


def plan_secrets(leader: str, names: Mapping[str, str], existing: set[str], owner: StateIdentity | None = None) -> Plan:
    """Create the secrets that do not exist yet, labelled with the state directory that made them;
    each value goes on stdin from the executor's secrets."""
    labels = owner.labels() if owner is not None and owner.fingerprint else ""
    return Plan(
        tuple(
            Run(leader, f"docker secret create{labels} {name} - >/dev/null", f"created Docker secret {name}", stdin=key)
            for key, name in names.items()
            if name not in existing
        )
    )


def foreign_owner(
    stack: str, ours: StateIdentity, mounted: Sequence[SecretOwner], generated: Mapping[str, str | None]
) -> str | None:
    """Why the stack as deployed belongs to another state directory, or None when it is ours (or new).

    A secret labelled by other credentials says so, naming them. A stack deployed before the labels:
    when it mounts generated secrets (values made once, kept only in a state directory's credentials)
    and none of them has the name ours would give (`generated`: key -> our name, None where we have no
    value yet), other credentials made them.
    """
    others = sorted({(s.state, s.directory) for s in mounted if s.state and s.state != ours.fingerprint})
    ours_text = f"{ours.directory} (credentials {ours.fingerprint or 'not made yet'})"
    if others:
        theirs = " and ".join(
            f"{directory or 'an unnamed state directory'} (credentials {state})" for state, directory in others
        )
        where = f"its secrets were made from {theirs}, and this run's state directory is {ours_text}"
    else:
        unlabelled = {s.name for s in mounted if not s.state}
        mounted_generated = {
            key: [n for n in unlabelled if re.fullmatch(rf"{re.escape(stack)}_{re.escape(key)}_[0-9a-f]{{12}}", n)]
            for key in generated
        }
        seen = {key: names for key, names in mounted_generated.items() if names}
        if not seen or any(generated[key] in names for key, names in seen.items()):
            return None
        where = (
            f"its generated secrets ({', '.join(sorted(seen))}) are not the ones the credentials of this run's state "
            f"directory {ours_text} give (they were made before swarmlab labelled secrets, so which state directory "
            "made them is not recorded)"
        )
    return (
        f"stack {stack} was deployed from another state directory: {where}. Deploying from here would roll out "
        "other passwords, which the servers initialised with the first ones refuse, and Swarm would roll the "
        "services back. Nothing was changed. Fix: deploy from the state directory that deployed it (the same "
        "--target, or state_dir pointing there); or, if both drive this same cluster, make them one: copy that "
        f"directory's credentials file over {ours.directory}/credentials (mode 600)"
    )


def plan_prune_secrets(
    leader: str, stack: str, keep: Mapping[str, str], existing: Sequence[str], in_use: set[str]
) -> Plan:
    """Remove this stack's older secret versions that no service mounts any more."""
    current = set(keep.values())
    stale = [name for name in existing if name.startswith(f"{stack}_") and name not in current | in_use]
    return Plan(
        tuple(Run(leader, f"docker secret rm {name}", f"removed unused Docker secret {name}") for name in stale)
    )


def converged_verdict(stack: str) -> Callable[[str], Verdict]:
    def verdict(output: str) -> Verdict:
        states = stack_services(stack).parse(output)
        failed = [s for s in states if s.failed]
        if failed:
            details = "\n".join(
                f"- {s.name} ({s.update_state}): {s.last_error or 'no failed task recorded'}" for s in failed
            )
            return Verdict.failure(f"the update of stack {stack} failed and Swarm rolled it back:\n{details}")
        lagging = [s for s in states if not s.converged]
        if not states:
            return Verdict.waiting(f"stack {stack} has no services yet")
        if lagging:
            waiting = ", ".join(f"{s.name.removeprefix(stack + '_')} {s.replica_status.split()[0]}" for s in lagging)
            summary = f"{len(states) - len(lagging)}/{len(states)} services ready; waiting for {waiting}"
            errors = "".join(f"\n- {s.name}: {s.last_error}" for s in lagging if s.last_error)
            return Verdict.waiting(summary + errors)
        return Verdict.ready(f"{len(states)} services have their replicas, healthy")

    return verdict


def check_placement(stack: str, document: Mapping[str, Any], workers: int) -> None:
    """Refuse a replicated service that asks for more tasks than the workers can hold (managers are
    drained): one a node when it publishes a host-mode port, or max_replicas_per_node. Swarm would leave
    the rest pending ("host-mode port already in use") and the deploy would wait its whole timeout.
    Services placed by labels or hostnames are not judged: the inventory does not say where those go."""
    problems = []
    for name, service in (document.get("services") or {}).items():
        deploy = service.get("deploy") or {}
        placement = deploy.get("placement") or {}
        if deploy.get("mode", "replicated") != "replicated" or any(
            c.replace(" ", "") != "node.role==worker" for c in placement.get("constraints") or []
        ):
            continue
        host = [p["published"] for p in service.get("ports") or [] if isinstance(p, dict) and p.get("mode") == "host"]
        per_node = 1 if host else int(placement.get("max_replicas_per_node") or 0)
        replicas = int(deploy.get("replicas", 1))
        if per_node and replicas > per_node * workers:
            why = f"publishes port {host[0]} in host mode" if host else f"has max_replicas_per_node {per_node}"
            problems.append(
                f"{name}: replicas {replicas}, but it {why} and the cluster has {workers} worker(s), "
                f"so at most {per_node * workers} can run"
            )
    if problems:
        raise SwarmlabError(
            f"stack {stack} cannot be placed on this cluster:\n"
            + "".join(f"  - {problem}\n" for problem in problems)
            + "Fix: lower those replicas in the stack's values (--values FILE), or add workers; nothing was deployed"
        )


def stack_diff(deployed: str, rendered: str) -> str:
    return "".join(difflib.unified_diff(deployed.splitlines(True), rendered.splitlines(True), "deployed", "rendered"))


def plan_deploy(leader: str, stack: str, rendered: str, deployed: str, states: Sequence[Service]) -> Plan:
    """Deploy when the rendered stack differs from the deployed one, an update was rolled back, or a
    service of the stack is gone (`docker stack rm` or `docker service rm` by hand leaves the stored
    file as it was); then wait until every service has its replicas and its update completed.

    The stack's networks are joined first, by its network anchor (plans.anchor), deployed and waited
    for before the services, and deployed again with them so that `--prune` keeps it."""
    remote = f"{REMOTE_STACKS}/{stack}.yml"
    document = yaml.safe_load(rendered) or {}
    anchor = anchor_stack(document)
    wanted = {f"{stack}_{name}" for name in document.get("services") or {}}
    if anchor:
        wanted.add(f"{stack}_{ANCHOR_SERVICE}")
    wait = Wait(
        leader,
        stack_services(stack).command,
        converged_verdict(stack),
        "every service converged",
        CONVERGE_TIMEOUT,
        1,  # the command costs about 0.15 s on the lab's manager
        progress=True,
    )
    changed = rendered != deployed or not wanted <= {s.name for s in states}
    if not changed and states and all(s.converged for s in states):
        return Plan(notes=("the deployed stack equals the rendered one and every service is converged",))
    if not changed and not any(s.failed for s in states):
        return Plan((wait,), ("the stack is deployed; waiting for its services",))
    files = f"-c {remote}"
    operations: list[Operation] = [
        Run(leader, f"mkdir -p {REMOTE_STACKS}", "a directory for stack files", changes=False),
        Write(leader, remote, rendered.encode(), f"the rendered stack {stack}", mode=0o600),
    ]
    if anchor:
        anchor_remote = f"{REMOTE_STACKS}/{stack}.{ANCHOR_SERVICE}.yml"
        files += f" -c {anchor_remote}"
        operations += [
            Write(leader, anchor_remote, anchor.encode(), f"the network anchor of {stack}", mode=0o600),
            # No --prune: the services already deployed stay as they are until the full deploy.
            Run(leader, f"docker stack deploy -c {anchor_remote} {stack}", f"the networks of {stack} and its anchor"),
            Wait(
                leader,
                stack_replicas(stack).command,
                anchor_verdict(stack),
                "every worker joined the stack's networks, one at a time",
                ANCHOR_TIMEOUT,
                0.5,
                progress=True,  # its first start pulls an image on every worker: say so as it goes
            ),
        ]
    operations += [Run(leader, f"docker stack deploy --prune {files} {stack}", f"stack {stack} deployed"), wait]
    return Plan(tuple(operations))
