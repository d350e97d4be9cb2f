"""A Docker node's tenant-isolation state: the script's and the drop-in's digests, whether systemd runs
the node, and the names of the swarmlab rules in its DOCKER-USER chain."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cluster.facts import Fact
from rendering.isolation import CHAIN, COMMENT_PREFIX

_RULE_NAME = re.compile(re.escape(COMMENT_PREFIX) + r"([A-Za-z0-9._-]+)")


@dataclass(frozen=True)
class IsolationState:
    script_sha: str  # "" when the script is absent
    dropin_sha: str
    systemd: bool
    rules: frozenset[str]  # the names of the swarmlab rules in DOCKER-USER (rendering.isolation.Rule.name)


def _sha(value: str) -> str:
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else ""


def parse_isolation_state(output: str) -> IsolationState:
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line and not line.startswith("-"))
    rules = frozenset(
        match.group(1) for line in output.splitlines() if line.startswith("-A ") for match in _RULE_NAME.finditer(line)
    )
    return IsolationState(
        _sha(values.get("script_sha", "")), _sha(values.get("dropin_sha", "")), values.get("systemd") == "yes", rules
    )


def isolation_state(script: str, dropin: str) -> Fact[IsolationState]:
    """One round trip: the two files' sha256 ("" when absent), systemd or not, then `iptables -S` of the
    chain (nothing when the engine has not made it yet)."""
    return Fact(
        f"printf 'script_sha=%s\\n' \"$(sha256sum {script} 2>/dev/null | cut -d' ' -f1)\"; "
        f"printf 'dropin_sha=%s\\n' \"$(sha256sum {dropin} 2>/dev/null | cut -d' ' -f1)\"; "
        "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\"; "
        f"iptables -w -S {CHAIN} 2>/dev/null; true",
        parse_isolation_state,
    )
