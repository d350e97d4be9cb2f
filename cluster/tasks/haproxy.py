"""The haproxy task: render haproxy.cfg from the inventory and the routes of every workload the cluster
serves, validate it on the lb node, swap it in and reload without dropping connections."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import haproxy.model as haproxy
import topology
from cluster.credentials import load_or_create
from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.daemons import daemon_facts, file_sha
from cluster.inventory import Node
from cluster.operations import Plan
from cluster.plans.clustermap import map_route
from cluster.plans.daemon import on_node, plan_file, plan_push
from cluster.progress import PhaseResult
from cluster.reads import served_workloads
from cluster.session import Session
from cluster.tls import Certificate, ClusterTLS, certificate_names, cluster_scope, lb_names, user_certificate
from cluster.workload import Workload
from topology import MAP_PORT

ADMIN_PASSWORD = "admin_password"


def routes_of(workloads: Sequence[Workload], reserved: Sequence[haproxy.Route] = ()) -> tuple[haproxy.Route, ...]:
    """Every route of every workload, after the cluster's own (`reserved`, e.g. the map); two may not
    claim the same prefix or name, nor two workloads the same port."""
    routes: list[haproxy.Route] = list(reserved)
    owners: dict[object, str] = {}
    for own in reserved:
        owners[("path", own.path_prefix)] = owners[("name", own.name)] = f"the cluster's {own.name}"
    for workload in workloads:
        for route in workload.routes:
            for claim in (("path", route.path), ("port", route.port), ("name", route.name)):
                if owners.setdefault(claim, workload.name) != workload.name:
                    both = (
                        f"{owners[claim]} and stack {workload.name}"
                        if owners[claim].startswith("the cluster's")
                        else f"stacks {owners[claim]} and {workload.name}"
                    )
                    raise SwarmlabError(
                        f"{both} both claim route {claim[0]} {claim[1]}: "
                        "HAProxy can send it to one only. Fix: change the route in one bundle.yaml"
                    )
            routes.append(
                haproxy.Route(
                    route.name, route.path, route.port, route.health, route.strip_prefix, route.admin, csp=route.csp
                )
            )
    return tuple(routes)


def site_certificate(session: Session, progress: PhaseResult) -> Certificate:
    """HAProxy's certificate: the user's own (tls_cert, tls_key), else one the cluster CA issues for
    the lb node's addresses and tls_names (kept in the state directory, renewed only when needed)."""
    config, inventory = session.config, session.inventory
    if config.tls_cert is not None and config.tls_key is not None:
        return user_certificate(config.tls_cert, config.tls_key)
    tls = ClusterTLS(session.state.tls, inventory.cluster, write=not session.dry_run)
    authority = tls.authority(cluster_scope(inventory, config.tls_names), progress)
    addresses, names = lb_names(inventory, config.tls_names)
    return tls.certificate("haproxy", authority, addresses, names)


def redirect_port(endpoint: str) -> int | None:
    """The public HTTPS port plain HTTP must redirect to, when it is not 443 (the lab's host port)."""
    url = urlsplit(endpoint)
    return url.port if url.scheme == "https" and url.port not in (None, topology.HTTPS_PORT) else None


def admin_password(session: Session) -> str:
    """The cluster's admin credential (user `admin`) for the admin routes: made once, kept in the state
    directory with the other credentials, never written anywhere else."""
    return load_or_create(session.state.credentials, [ADMIN_PASSWORD])[ADMIN_PASSWORD]


def configure_haproxy(session: Session, leader: Node | None, also: Workload | None = None) -> None:
    """haproxy.cfg on every lb node (one, or both of a pair): the same routes and certificate, each lb
    its own render (the exporter binds the node's private address), one lb after the other so that a
    configuration HAProxy refuses stops the run before the second lb is touched."""
    workloads = served_workloads(session, leader, also)
    names = ", ".join(w.name for w in workloads)
    inventory = session.inventory
    lbs = inventory.lbs
    where = "the lb node" if len(lbs) == 1 else f"each lb node ({', '.join(lb.name for lb in lbs)})"
    with session.phase("haproxy", f"haproxy.cfg for {names}: render, validate on {where}, swap in and reload") as p:
        certificate = site_certificate(session, p)
        tls = haproxy.Tls(certificate.sha256, redirect_port(inventory.endpoints.http))
        workers = [(w.name, str(w.private_ip)) for w in inventory.workers]
        routes = routes_of(
            workloads, reserved=(map_route([(m.name, str(m.private_ip)) for m in inventory.managers], MAP_PORT),)
        )
        digest = haproxy.admin_digest(admin_password(session))
        daemon = haproxy.DAEMON
        why = f"TLS certificate for {', '.join(certificate_names(certificate))}"
        plan = Plan()
        for lb in lbs:
            config = haproxy.build(
                inventory.cluster,
                workers,
                routes,
                tls,
                private_address=str(lb.private_ip),
                admin_password_digest=digest,
                conn_per_source=session.config.edge_conn_per_source,
            )
            text = haproxy.render_config(config)
            facts = read(session.runner, lb, daemon_facts(daemon.config_path, daemon.pid_file, daemon.unit))
            # The certificate goes first: `haproxy -c` loads it when it checks the new configuration.
            current = read(session.runner, lb, file_sha(tls.certificate_path))
            pushed = plan_file(lb.name, tls.certificate_path, certificate.bundle, current, why)
            pushed += plan_push(lb.name, daemon, facts, text)
            plan += pushed if len(lbs) == 1 else on_node(pushed, lb.name)
        session.executor().execute(plan, p)
