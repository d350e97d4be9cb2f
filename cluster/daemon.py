"""A daemon driven by one configuration file (HAProxy, nfs-ganesha): push the file, validate it
before it replaces the running one, then reload or start the daemon. Planned from facts (pure).

On a VM systemd manages the daemon; in a lab node (no systemd) it runs from its pid file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Daemon:
    name: str
    config_path: str
    pid_file: str
    unit: str  # systemd unit
    start: str  # how to start it without systemd (must detach and close stdio)
    reload: str  # how to reload it without systemd; "{pid}" is the master's pid
    validate: str | None = None  # "{path}" is the file to check

    @property
    def new_path(self) -> str:
        return self.config_path + ".new"

    @property
    def facts_command(self) -> str:
        pid = self.pid_file
        return (
            f"printf 'config_sha=%s\\n' \"$(sha256sum {self.config_path} 2>/dev/null | cut -d' ' -f1)\"; "
            "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\"; "
            f'printf \'running=%s\\n\' "$( (test -s {pid} && kill -0 "$(head -n1 {pid})") 2>/dev/null '
            '&& echo yes || echo no)"'
        )


@dataclass(frozen=True)
class DaemonFacts:
    config_sha: str
    systemd: bool
    running: bool


def parse_facts(output: str) -> DaemonFacts:
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return DaemonFacts(values.get("config_sha", ""), values.get("systemd") == "yes", values.get("running") == "yes")


@dataclass(frozen=True)
class DaemonStep:
    command: str
    why: str
    upload: bool = False  # write the new configuration to new_path (command is empty)
    change: bool = True  # reported as a change (checks and uploads are not)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plan_push(daemon: Daemon, facts: DaemonFacts, config_text: str) -> tuple[DaemonStep, ...]:
    changed = facts.config_sha != sha256(config_text)
    steps: list[DaemonStep] = []
    if changed:
        steps.append(DaemonStep("", "upload the new configuration", upload=True, change=False))
        if daemon.validate:
            steps.append(
                DaemonStep(
                    daemon.validate.format(path=daemon.new_path),
                    "validate it before it replaces the running one",
                    change=False,
                )
            )
        steps.append(DaemonStep(f"mv {daemon.new_path} {daemon.config_path}", f"{daemon.config_path} replaced"))
    if facts.running and changed:
        reload = (
            f"systemctl reload {daemon.unit}"
            if facts.systemd
            else daemon.reload.format(pid=f'"$(head -n1 {daemon.pid_file})"')
        )
        steps.append(DaemonStep(reload, f"{daemon.name} reloaded"))
    elif not facts.running:
        start = f"systemctl enable {daemon.unit} && systemctl restart {daemon.unit}" if facts.systemd else daemon.start
        steps.append(DaemonStep(start, f"{daemon.name} started"))
    return tuple(steps)
