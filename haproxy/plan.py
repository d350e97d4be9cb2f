"""Push and reload HAProxy, planned from facts (pure): validate before swapping, reload the master
(master-worker mode: SIGUSR2, or systemd's reload which does the same) so no connection is dropped."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from haproxy.model import CONFIG_PATH

PID_FILE = "/run/haproxy.pid"
NEW_PATH = CONFIG_PATH + ".new"
FACTS_COMMAND = (
    f"printf 'config_sha=%s\\n' \"$(sha256sum {CONFIG_PATH} 2>/dev/null | cut -d' ' -f1)\"; "
    "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\"; "
    f'printf \'running=%s\\n\' "$( (test -s {PID_FILE} && kill -0 "$(head -n1 {PID_FILE})") 2>/dev/null '
    '&& echo yes || echo no)"'
)


@dataclass(frozen=True)
class HAProxyFacts:
    config_sha: str
    systemd: bool
    running: bool


def parse_facts(output: str) -> HAProxyFacts:
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return HAProxyFacts(values.get("config_sha", ""), values.get("systemd") == "yes", values.get("running") == "yes")


@dataclass(frozen=True)
class HAProxyStep:
    command: str
    why: str
    upload: bool = False  # write the new configuration to NEW_PATH (command is empty)
    change: bool = True  # reported as a change (checks and uploads are not)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plan_haproxy(facts: HAProxyFacts, config_text: str) -> tuple[HAProxyStep, ...]:
    changed = facts.config_sha != sha256(config_text)
    steps: list[HAProxyStep] = []
    if changed:
        steps += [
            HAProxyStep("", "upload the new configuration", upload=True, change=False),
            HAProxyStep(f"haproxy -c -q -f {NEW_PATH}", "validate it before it replaces the running one", change=False),
            HAProxyStep(f"mv {NEW_PATH} {CONFIG_PATH}", "haproxy.cfg replaced"),
        ]
    if facts.running and changed:
        reload = "systemctl reload haproxy" if facts.systemd else f'kill -USR2 "$(head -n1 {PID_FILE})"'
        steps.append(HAProxyStep(reload, "HAProxy reloaded (master-worker: old workers finish their connections)"))
    elif not facts.running:
        start = (
            "systemctl enable --now haproxy && systemctl restart haproxy"
            if facts.systemd
            else f"mkdir -p /run/haproxy && haproxy -W -D -p {PID_FILE} -f {CONFIG_PATH} </dev/null >/dev/null 2>&1"
        )
        steps.append(HAProxyStep(start, "HAProxy started in master-worker mode"))
    return tuple(steps)
