"""Tenant isolation on a Docker node, pure: the script (and, under systemd, the engine's drop-in that runs
it at each start) in place, and the script run when a rule is missing from DOCKER-USER. The rules
themselves are rendering.isolation's: the lab and cloud-init put the same script on each node at creation."""

from __future__ import annotations

import hashlib

import topology
from cluster.facts.firewall import IsolationState
from cluster.operations import Plan, Run
from cluster.plans.daemon import plan_file
from rendering.isolation import CHAIN, Rule


def plan_isolation(node: str, rules: tuple[Rule, ...], script: str, dropin: str, state: IsolationState) -> Plan:
    """Write what differs, then run the script if a rule is missing or the script changed (it inserts only
    the rules `iptables -C` does not find, so running it twice changes nothing)."""
    wanted = [rule.name for rule in rules]
    missing = [name for name in wanted if name not in state.rules]
    script_changed = state.script_sha != hashlib.sha256(script.encode()).hexdigest()
    plan = plan_file(
        node,
        topology.ISOLATION_SCRIPT,
        script.encode(),
        state.script_sha,
        f"{node}: the tenant-isolation script ({len(rules)} {CHAIN} rules)",
        mode=0o755,
        dir_mode=0o755,
    )
    if state.systemd:
        plan += plan_file(
            node,
            topology.ISOLATION_DROPIN,
            dropin.encode(),
            state.dropin_sha,
            f"{node}: docker.service runs the script at each start",
            mode=0o644,
            dir_mode=0o755,
        )
        if state.dropin_sha != hashlib.sha256(dropin.encode()).hexdigest():
            plan += Plan((Run(node, "systemctl daemon-reload", f"{node}: systemd reads the drop-in", changes=False),))
    if missing or script_changed:
        what = ", ".join(missing) if missing else "the new script's rules"
        why = f"{node} {CHAIN}: {what} in place"
        plan += Plan((Run(node, topology.ISOLATION_SCRIPT, why),))
    extra = sorted(state.rules - set(wanted))
    notes = []
    if not plan.operations:
        notes.append(f"{node}: {len(wanted)} {CHAIN} rules already in place")
    if extra:
        # A rule of an earlier script (another storage address) stays until the node restarts its engine's
        # namespace: say so rather than guess whether it is still wanted.
        notes.append(f"{node}: {CHAIN} also holds {', '.join(extra)}, which this cluster no longer renders")
    return Plan(plan.operations, plan.notes + tuple(notes))
