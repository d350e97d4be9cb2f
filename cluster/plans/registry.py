"""The cluster registry's TLS, pure: which engines must be told to trust the cluster CA for it, and
whether the storage node needs the registry's certificate, and the writable endpoint's systemd unit;
the two configurations themselves are pushed like any daemon's (plans.daemon.plan_push)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cluster.operations import Plan, Run
from cluster.plans.daemon import plan_file
from registry.model import CERT_PATH, KEY_PATH, PUSH_UNIT, PUSH_UNIT_PATH, SERVICE_USER, TLS_DIR, trust_path


def plan_trust(registry: str, ca_pem: bytes, trusted_shas: Mapping[str, str]) -> Plan:
    """The CA in /etc/docker/certs.d/<registry>/ca.crt on each engine that lacks it (Docker reads it
    at each pull and push: no engine restart)."""
    plan = Plan()
    for node, sha in sorted(trusted_shas.items()):
        why = f"{node} trusts the cluster CA for {registry}"
        # Read-only (CIS Docker Benchmark 3.8: registry certificate files 444 or tighter).
        plan += plan_file(node, trust_path(registry), ca_pem, sha, why, mode=0o444, dir_mode=0o755)
    return plan


def plan_certificate(storage: str, chain_pem: bytes, key_pem: bytes, current_sha: str, names: str) -> Plan:
    """The registry's certificate and key on the storage node, when its certificate is not this one."""
    if current_sha == hashlib.sha256(chain_pem).hexdigest():
        return Plan()
    return (
        plan_file(storage, KEY_PATH, key_pem, "", "the registry's TLS key")
        + plan_file(storage, CERT_PATH, chain_pem, "", f"the registry's TLS certificate for {names}", mode=0o644)
        + Plan(
            (
                Run(
                    storage,
                    # Debian's unit runs it as this user (the lab runs it as root): it must read its key,
                    # so it also needs to traverse the key's directory (root's 700 otherwise; the
                    # rehearsal found this: a systemd node's registry could not read its key).
                    f"if id -u {SERVICE_USER} >/dev/null 2>&1; then chown {SERVICE_USER} {KEY_PATH} {CERT_PATH} "
                    f"&& chgrp {SERVICE_USER} {TLS_DIR} && chmod 750 {TLS_DIR}; fi",
                    "the registry's user owns them and may enter their directory",
                    changes=False,
                ),
            )
        )
    )


def plan_push_unit(storage: str, unit_text: str, current_sha: str, systemd: bool, running: bool) -> Plan:
    """The writable endpoint's systemd unit on a systemd node, when it is not this one (the lab's nodes
    run it from its pid file). Ours, not the package's: Debian's unit serves one configuration only, and
    a storage node provisioned before this endpoint existed gets it here too. A changed unit of a
    running endpoint restarts it."""
    if not systemd:
        return Plan()
    content = unit_text.encode()
    plan = plan_file(storage, PUSH_UNIT_PATH, content, current_sha, f"the {PUSH_UNIT} unit", mode=0o644, dir_mode=0o755)
    if not plan.operations:
        return plan
    reload = Run(storage, "systemctl daemon-reload", "systemd reads the unit", changes=False)
    restart = (
        (Run(storage, f"systemctl restart {PUSH_UNIT}", f"{PUSH_UNIT} restarted with its new unit"),) if running else ()
    )
    return plan + Plan((reload, *restart))
