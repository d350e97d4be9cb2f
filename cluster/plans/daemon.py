"""Pushing a daemon's configuration file, pure: facts in, operations out.

Upload the new file beside the old one, validate it before it replaces the running one, swap it in,
then reload the daemon (or start it), and wait until it serves again. Nothing is done when the file
is current and the daemon runs.
"""

from __future__ import annotations

import dataclasses
import hashlib

from cluster.facts.daemons import DaemonFacts
from cluster.operations import Operation, Parallel, Plan, Run, Wait, Write
from cluster.waiting import Verdict
from rendering.daemon import DaemonSpec

DAEMON_ANSWER_TIMEOUT = 20  # a (re)started daemon answers its probe


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _answers(output: str) -> Verdict:
    return Verdict.ready() if output.strip() == "ready" else Verdict.waiting("it does not answer yet")


def plan_file(
    node: str, path: str, content: bytes, current_sha: str, why: str, *, mode: int = 0o600, dir_mode: int = 0o700
) -> Plan:
    """A file a daemon reads (a certificate, its key): written only when its digest differs, into a
    directory of the given mode (root only for keys)."""
    if current_sha == hashlib.sha256(content).hexdigest():
        return Plan()
    directory = path.rsplit("/", 1)[0]
    return Plan(
        (
            Run(node, f"mkdir -p {directory} && chmod {dir_mode:o} {directory}", f"{directory} exists", changes=False),
            Write(node, path, content, why, mode=mode, changes=True),
        )
    )


def plan_push(node: str, daemon: DaemonSpec, facts: DaemonFacts, config_text: str) -> Plan:
    changed = facts.config_sha != sha256(config_text)
    operations: list[Operation] = []
    if changed:
        operations.append(
            Write(node, daemon.new_path, config_text.encode(), "upload the new configuration", mode=daemon.config_mode)
        )
        if daemon.validate:
            operations.append(
                Run(
                    node,
                    daemon.validate.format(path=daemon.new_path),
                    "validate it before it replaces the running one",
                    changes=False,
                )
            )
        operations.append(Run(node, f"mv {daemon.new_path} {daemon.config_path}", f"{daemon.config_path} replaced"))
    if facts.running and changed:
        reload = (
            f"systemctl {daemon.systemd_reload} {daemon.unit}"
            if facts.systemd
            else daemon.reload.format(pid=f'"$(head -n1 {daemon.pid_file})"')
        )
        operations.append(Run(node, reload, f"{daemon.name} reloaded"))
    elif not facts.running:
        start = f"systemctl enable {daemon.unit} && systemctl restart {daemon.unit}" if facts.systemd else daemon.start
        operations.append(Run(node, start, f"{daemon.name} started"))
    if operations and daemon.ready:
        probe = f"({daemon.ready}) >/dev/null 2>&1 && echo ready || echo no"
        operations.append(Wait(node, probe, _answers, f"{daemon.name} answers", DAEMON_ANSWER_TIMEOUT, 0.5))
    if not operations:
        return Plan(notes=(f"{daemon.config_path} is current and {daemon.name} runs",))
    return Plan(tuple(operations))


def in_private_directory(node: str, push: Plan, directory: str) -> Plan:
    """A push that changes something first makes sure `directory` is root's alone (provisioning makes
    it so; a machine of your own may not have it): for a file that holds a secret (keepalived's)."""
    if not push.changes:
        return push
    ensure = Run(node, f"mkdir -p {directory} && chmod 700 {directory}", f"{directory} is root's only", changes=False)
    return Plan((ensure, *push.operations), push.notes)


def on_node(plan: Plan, node: str) -> Plan:
    """The plan with `node` named in what it reports (`... on lb-2`): two lbs get the same pushes, and
    "HAProxy reloaded" twice would not say where."""

    def named(operation: Operation) -> Operation:
        if isinstance(operation, Wait):
            return dataclasses.replace(operation, what=f"{operation.what} on {node}")
        if isinstance(operation, Parallel):
            return dataclasses.replace(operation, what=f"{operation.what} on {node}")
        return dataclasses.replace(operation, why=f"{operation.why} on {node}")

    return Plan(tuple(named(op) for op in plan.operations), tuple(f"{node}: {note}" for note in plan.notes))
