"""HAProxy's configuration as data (pure): typed routes and servers in, configuration text and the
daemon spec out. A leaf model: it imports nothing of cluster/."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import topology
from rendering.daemon import DaemonSpec
from rendering.render import render

CONFIG_PATH = "/etc/haproxy/haproxy.cfg"
PID_FILE = "/run/haproxy.pid"
# The certificate chain and its key in one file, as HAProxy's `crt` reads it (root only, mode 600:
# the master reads it as root; the workers that serve run as the haproxy user).
CERT_DIR = "/etc/haproxy/tls"
CERT_PATH = f"{CERT_DIR}/site.pem"
# HSTS: browsers that saw HTTPS here once never try plain HTTP again for a year (hostnames only:
# browsers ignore it for IP addresses such as the lab's 127.0.0.1).
HSTS_MAX_AGE = 31536000
# Every answer that carries no policy of its own (a route's, or the service's) gets this one: our
# own scripts and styles only (the pages keep theirs in files), never framed, forms to us only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
REFERRER_POLICY = "same-origin"
# Connections one source address may hold at once (HAProxy refuses more, before TLS). Above what
# the project's own tools open from one address: make bench's hey (24), make chaos (4 hey
# connections and 3 flows), the lab tests (a few), all from one address on the lab.
CONN_PER_SOURCE = 200
# The whole request, headers and body, within this (option http-buffer-request): a client that
# sends its body a byte at a time holds a connection no longer.
REQUEST_TIMEOUT_SECONDS = 10

# Validated with `haproxy -c` before the swap, reloaded through its master (master-worker mode:
# SIGUSR2, or systemd's reload, which does the same), so the old workers finish their connections
# and none is refused.
DAEMON = DaemonSpec(
    name="HAProxy",
    config_path=CONFIG_PATH,
    pid_file=PID_FILE,
    unit="haproxy",
    start=f"mkdir -p /run/haproxy && haproxy -W -D -p {PID_FILE} -f {CONFIG_PATH} </dev/null >/dev/null 2>&1",
    reload="kill -USR2 {pid}",
    validate="haproxy -c -f {path}",  # not -q: its complaint is the error message
    ready=f"curl -sf -o /dev/null http://127.0.0.1:{topology.STATS_PORT}/stats",
)


ADMIN_USER = "admin"
ADMIN_REALM = "swarmlab admin"


@dataclass(frozen=True)
class Route:
    """A path prefix served by one edge service, published on the same port on every worker (or on the
    nodes `servers` names, e.g. the managers)."""

    name: str
    path_prefix: str  # "/" for the default route
    port: int
    health_path: str = "/healthz"
    strip_prefix: bool = False  # the service knows nothing of the prefix (e.g. /mail/)
    admin: bool = False  # only with the admin credential (HTTP basic auth)
    servers: tuple[tuple[str, str], ...] | None = None  # (name, address); None: the workers
    csp: str | None = None  # this route's Content-Security-Policy, instead of CONTENT_SECURITY_POLICY


def admin_digest(password: str, user: str = ADMIN_USER) -> str:
    """What HAProxy compares an Authorization header with: the SHA-256 of `Basic base64(user:password)`.

    The configuration holds this digest, never the password: the password is long and random, so the
    digest gives nothing away, and a hash is cheap per request (crypt(3) hashes block HAProxy).
    """
    header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return hashlib.sha256(header.encode()).hexdigest().upper()  # HAProxy's hex converter is upper case


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int


@dataclass(frozen=True)
class Backend:
    name: str
    path_prefix: str
    health_path: str
    servers: tuple[Server, ...]
    strip_prefix: bool = False
    admin: bool = False
    csp: str | None = None

    @property
    def is_default(self) -> bool:
        return self.path_prefix == "/"


@dataclass(frozen=True)
class Tls:
    """HAProxy's HTTPS frontend: the certificate file, a digest of it (a new certificate changes the
    configuration text, so the push reloads HAProxy), and the port plain HTTP redirects to, when the
    public HTTPS port is not 443 (the lab publishes 443 on another host port)."""

    certificate_sha: str
    redirect_port: int | None = None
    certificate_path: str = CERT_PATH
    hsts_max_age: int = HSTS_MAX_AGE


@dataclass(frozen=True)
class HAProxyConfig:
    cluster: str
    http_port: int
    stats_port: int
    backends: tuple[Backend, ...]
    tls: Tls
    https_port: int = topology.HTTPS_PORT
    metrics_bind: str | None = None  # "ip:port" of the Prometheus exporter (the private address only)
    admin_digest: str | None = None  # see admin_digest(); admin routes refuse everyone without it
    admin_realm: str = ADMIN_REALM
    csp: str = CONTENT_SECURITY_POLICY
    referrer_policy: str = REFERRER_POLICY
    conn_per_source: int = CONN_PER_SOURCE
    request_timeout: int = REQUEST_TIMEOUT_SECONDS

    @property
    def default_backend(self) -> Backend | None:
        return next((b for b in self.backends if b.is_default), None)

    @property
    def path_backends(self) -> tuple[Backend, ...]:
        # Longest prefix first, so /api/docs would win over /api/ if both existed.
        return tuple(sorted((b for b in self.backends if not b.is_default), key=lambda b: -len(b.path_prefix)))


def build(
    cluster: str,
    workers: Sequence[tuple[str, str]],
    routes: Sequence[Route],
    tls: Tls,
    *,
    http_port: int = topology.HTTP_PORT,
    stats_port: int = topology.STATS_PORT,
    private_address: str | None = None,
    admin_password_digest: str | None = None,
    conn_per_source: int = CONN_PER_SOURCE,
) -> HAProxyConfig:
    """One backend per route, one server per worker (name, address): edge services run a task per worker.

    With the lb node's `private_address`, HAProxy's own Prometheus exporter listens there (the cluster
    network only, never the public address)."""
    backends = tuple(
        Backend(
            name=route.name,
            path_prefix=route.path_prefix,
            health_path=route.health_path,
            servers=tuple(Server(name, address, route.port) for name, address in (route.servers or workers)),
            strip_prefix=route.strip_prefix,
            admin=route.admin,
            csp=route.csp,
        )
        for route in routes
    )
    metrics = f"{private_address}:{topology.LB_METRICS_PORT}" if private_address else None
    return HAProxyConfig(
        cluster,
        http_port,
        stats_port,
        backends,
        tls,
        metrics_bind=metrics,
        admin_digest=admin_password_digest,
        conn_per_source=conn_per_source,
    )


def render_config(config: HAProxyConfig) -> str:
    return render("haproxy/haproxy.cfg.j2", {"config": config})
