"""The registry task: the cluster registry serves TLS with a certificate of the cluster CA, read-only,
and every engine trusts that CA for it (no insecure registry anywhere); its writable endpoint listens
on the storage node's loopback, for the builds there. Run by bootstrap and before builds."""

from __future__ import annotations

import ipaddress

import registry.model as registry
from cluster.facts import read
from cluster.facts.daemons import daemon_facts, file_sha
from cluster.inventory import Role
from cluster.plans.daemon import plan_push
from cluster.plans.registry import plan_certificate, plan_push_unit, plan_trust
from cluster.session import Session
from cluster.tls import ClusterTLS, IPAddress, certificate_names, cluster_scope


def registry_names(host: str) -> tuple[list[IPAddress], list[str]]:
    """What the registry's certificate names: its address, or its DNS name."""
    try:
        return [ipaddress.ip_address(host)], []
    except ValueError:
        return [], [host]


def configure_registry(session: Session) -> None:
    inventory, runner = session.inventory, session.runner
    storage, endpoint = inventory.storage, inventory.registry
    if storage is None or endpoint is None:
        return
    host, _, port = endpoint.rpartition(":")
    with session.phase(
        "registry",
        f"the cluster registry {endpoint}: TLS from the cluster CA, trusted by every engine, read-only; "
        f"pushes through {registry.PUSH_ENDPOINT} on {storage.name}",
    ) as p:
        tls = ClusterTLS(session.state.tls, inventory.cluster, write=not session.dry_run)
        authority = tls.authority(cluster_scope(inventory, session.config.tls_names), p)
        certificate = tls.certificate("registry", authority, *registry_names(host))
        trust = registry.trust_path(endpoint)
        engines = [n for n in inventory.nodes if n.role is not Role.LB]
        trusted = runner.each(
            engines,
            lambda n: read(runner, n, file_sha(trust)),
            "reading the engines' trust",
        )
        current = read(runner, storage, file_sha(registry.CERT_PATH))
        daemon = registry.daemon(endpoint)
        facts = read(runner, storage, daemon_facts(daemon.config_path, daemon.pid_file, daemon.unit))
        text = registry.render_config(registry.build(certificate.sha256, int(port)))
        names = ", ".join(certificate_names(certificate))
        executor = session.executor()
        # Each engine's trust is its own small plan: all at once (with the engines one after the
        # other, this phase took 2.1 s in a 20-worker lab's bootstrap, at once 0.9 s; one run each).
        trust_by_node = {n.name: plan_trust(endpoint, authority.cert_pem, {n.name: trusted[n.name]}) for n in engines}
        runner.each(
            [n for n in engines if trust_by_node[n.name].operations],
            lambda n: executor.execute(trust_by_node[n.name], p),
            "trusting the cluster CA for the registry",
        )
        # The writable endpoint: its unit (systemd nodes) before its configuration's push starts it.
        push = registry.push_daemon()
        push_facts = read(runner, storage, daemon_facts(push.config_path, push.pid_file, push.unit))
        unit_sha = read(runner, storage, file_sha(registry.PUSH_UNIT_PATH)) if push_facts.systemd else ""
        plan = (
            plan_certificate(storage.name, certificate.chain_pem, certificate.key_pem, current, names)
            + plan_push(storage.name, daemon, facts, text)
            + plan_push_unit(
                storage.name, registry.render_push_unit(), unit_sha, push_facts.systemd, push_facts.running
            )
            + plan_push(storage.name, push, push_facts, registry.render_config(registry.build_push()))
        )
        executor.execute(plan, p)
