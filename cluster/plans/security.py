"""Rotating the swarm's join tokens and its root CA, pure.

Rotation is an action, not a state: every run rotates (and reports a change). Tokens never appear:
the rotate commands' output (the new token) goes to /dev/null on the manager.
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.facts.swarm import CA, CaFacts
from cluster.operations import Plan, Run, Wait
from cluster.plans.swarm import TokenRole
from cluster.waiting import Verdict

CA_TIMEOUT = 300


def plan_rotate_tokens(leader: str) -> Plan:
    """New worker and manager join tokens; nodes already joined are not affected."""
    return Plan(
        tuple(
            Run(
                leader,
                f"docker swarm join-token --rotate -q {role.value} >/dev/null",
                f"{role.value} join token rotated (the old one no longer joins)",
            )
            for role in TokenRole
        ),
        ("the new tokens are not shown: the tool reads them from a manager when it joins nodes",),
    )


def ca_verdict(before: str) -> Callable[[str], Verdict]:
    """The root CA changed, the rotation is over, and every node that is up holds a certificate of it."""

    def verdict(output: str) -> Verdict:
        facts = CA.parse(output)
        pending = [f"{host} ({tls})" for host, status, tls in facts.nodes if status == "Ready" and tls != "Ready"]
        if facts.issuer_key == before or facts.rotating or pending:
            return Verdict.waiting("nodes still renewing: " + (", ".join(pending) or "the new root is not in use yet"))
        return Verdict.ready(f"{len(facts.nodes)} nodes hold certificates of the new root CA")

    return verdict


def plan_rotate_ca(leader: str, facts: CaFacts) -> Plan:
    """A new root CA: Swarm cross-signs it, every node renews its certificate, then the old root goes."""
    wait = Wait(leader, CA.command, ca_verdict(facts.issuer_key), "every node renewed its certificate", CA_TIMEOUT, 3)
    if facts.rotating:
        return Plan((wait,), ("a root CA rotation is already in progress: waiting for it to finish",))
    down = [host for host, status, _ in facts.nodes if status != "Ready"]
    notes = (f"nodes not Ready will renew when they return: {', '.join(down)}",) if down else ()
    return Plan(
        (
            Run(leader, "docker swarm ca --rotate --detach --quiet >/dev/null", "root CA rotation started"),
            wait,
        ),
        (*notes, "the join tokens change with the root CA (they carry its digest)"),
    )
