"""deploy-stack: render the stack from Jinja, deploy it from a manager, and wait until every service
has its replicas running and healthy (a task with a healthcheck counts only once it is healthy)."""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field

import yaml

from cluster.errors import SwarmlabError
from cluster.inventory import Node
from cluster.progress import phase, say
from cluster.runners import Nodes
from cluster.stacks import StackSpec
from rendering.render import render

REMOTE_STACKS = "/root/.swarmlab/stacks"
CONVERGE_TIMEOUT = 300


@dataclass(frozen=True)
class StackInput:
    """Everything a stack template may use; secrets are names of Docker secrets, never values."""

    images: dict[str, str]
    values: object = None
    ports: dict[str, int] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    storage_mode: str = ""
    nfs_options: str = ""
    nfs_pseudo: str = ""


def render_stack(spec: StackSpec, data: StackInput) -> str:
    text = render(spec.template, data)
    yaml.safe_load(text)  # a template bug shows here, not as a confusing `docker stack deploy` error
    return text


@dataclass(frozen=True)
class ServiceState:
    name: str
    replicas: str  # "2/3", "1/1 (max 1 per node)"
    update: str = ""  # UpdateStatus.State: "", updating, completed, rollback_started, rollback_completed, paused...

    @property
    def failed(self) -> bool:
        """The last update did not stick: Swarm paused it or rolled it back."""
        return self.update in ("paused", "rollback_started", "rollback_paused", "rollback_completed")

    @property
    def converged(self) -> bool:
        running, _, rest = self.replicas.partition("/")
        wanted = rest.split()[0] if rest else ""  # "1/1 (max 1 per node)" -> "1"
        # Replicas alone are not enough: during a rolling update the old tasks still count.
        return wanted != "" and running == wanted and self.update in ("", "completed")


def parse_services(output: str) -> tuple[ServiceState, ...]:
    """Parse `name|replicas` lines, then `---`, then `name|update state` lines."""
    replicas_part, _, updates_part = output.partition("---")
    updates = dict(line.strip().split("|", 1) for line in updates_part.splitlines() if "|" in line)
    states = []
    for line in replicas_part.splitlines():
        if "|" in line:
            name, replicas = line.strip().split("|", 1)
            states.append(ServiceState(name, replicas.strip(), updates.get(name, "").strip()))
    return tuple(states)


def service_states(nodes: Nodes, leader: Node, stack: str) -> tuple[ServiceState, ...]:
    command = (
        f"docker stack services {stack} --format '{{{{.Name}}}}|{{{{.Replicas}}}}' && echo --- && "
        "docker service inspect --format '{{.Spec.Name}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "
        f"$(docker stack services -q {stack})"
    )
    out = nodes.run(leader, command, check=False)
    return parse_services(out.stdout) if out.ok else ()


def last_task_error(nodes: Nodes, leader: Node, service: str) -> str:
    out = nodes.run(
        leader,
        f"docker service ps {service} --no-trunc --format '{{{{.Node}}}}|{{{{.CurrentState}}}}|{{{{.Error}}}}'",
        check=False,
    )
    for line in out.stdout.splitlines():
        node, state, error = [*line.split("|"), "", ""][:3]
        if error or not state.startswith("Running"):
            return f"node {node or '?'}: {state}{': ' + error if error else ''}"
    return "no failed task recorded"


def wait_converged(nodes: Nodes, leader: Node, stack: str, timeout: float = CONVERGE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = service_states(nodes, leader, stack)
        if states and all(s.converged for s in states):
            return
        failed = [s for s in states if s.failed]
        if failed:
            details = "\n".join(f"- {s.name} ({s.update}): {last_task_error(nodes, leader, s.name)}" for s in failed)
            raise SwarmlabError(f"the update of stack {stack} failed and Swarm rolled it back:\n{details}")
        if time.monotonic() > deadline:
            lagging = [s for s in states if not s.converged]
            details = "\n".join(f"- {s.name} ({s.replicas}): {last_task_error(nodes, leader, s.name)}" for s in lagging)
            raise SwarmlabError(f"stack {stack} did not converge within {timeout:.0f}s:\n{details}")
        time.sleep(2)


def deploy(nodes: Nodes, leader: Node, spec: StackSpec, text: str, dry_run: bool = False) -> None:
    remote = f"{REMOTE_STACKS}/{spec.name}.yml"
    with phase("deploy-stack", f"deploy stack {spec.name!r} from {leader.name} and wait for healthy replicas") as p:
        deployed = nodes.run(leader, f"cat {remote}", check=False).stdout
        diff = "".join(difflib.unified_diff(deployed.splitlines(True), text.splitlines(True), "deployed", "rendered"))
        if dry_run:
            say(text)
            say(diff or "# no difference from what is deployed")
            return
        states = service_states(nodes, leader, spec.name)
        if not diff and states and all(s.converged for s in states):
            # (A rolled-back service is not converged: it is deployed again below.)
            p.note("the deployed stack equals the rendered one and every service is converged")
            return
        if diff or any(s.failed for s in states):
            nodes.run(leader, f"mkdir -p {REMOTE_STACKS}")
            nodes.write(leader, remote, text)
            nodes.run(leader, f"docker stack deploy --prune -c {remote} {spec.name}")
            p.changed(f"stack {spec.name} deployed")
        wait_converged(nodes, leader, spec.name)
