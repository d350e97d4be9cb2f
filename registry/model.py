"""The cluster's image registry on the storage node (Debian's docker-registry, distribution 2.8), pure:
typed input in, its configuration text and daemon spec out. A leaf model: nothing of cluster/.

It serves TLS only, with a certificate the cluster CA issues for its address; every engine trusts
that CA for this registry alone (/etc/docker/certs.d/<host:port>/ca.crt), so no engine needs
`insecure-registries`.
"""

from __future__ import annotations

from dataclasses import dataclass

import topology
from rendering.daemon import DaemonSpec, restart_by_pid
from rendering.render import render

CONFIG_PATH = "/etc/docker/registry/config.yml"
PID_FILE = "/run/docker-registry.pid"
DATA_DIR = topology.REGISTRY_DATA_DIR
TLS_DIR = "/etc/docker/registry/tls"
CERT_PATH = f"{TLS_DIR}/registry.crt"
KEY_PATH = f"{TLS_DIR}/registry.key"
LOG = "/var/log/docker-registry.log"
# Debian's unit runs the registry as this user: it must read the key (mode 600) itself.
SERVICE_USER = "docker-registry"


def trust_dir(registry: str) -> str:
    """The directory of the CAs an engine (and skopeo's --cert-dir) trusts for one registry (host:port)."""
    return f"/etc/docker/certs.d/{registry}"


def trust_path(registry: str) -> str:
    """Where an engine looks for the CA of one registry (host:port): Docker reads it at each pull and push."""
    return f"{trust_dir(registry)}/ca.crt"


@dataclass(frozen=True)
class RegistryConfig:
    port: int
    certificate_sha: str  # in the file, so that a new certificate changes it and the push restarts the registry
    root_dir: str = DATA_DIR
    cert_path: str = CERT_PATH
    key_path: str = KEY_PATH


def build(certificate_sha: str, port: int = topology.REGISTRY_PORT) -> RegistryConfig:
    return RegistryConfig(port, certificate_sha)


def render_config(config: RegistryConfig) -> str:
    return render("registry/config.yml.j2", {"config": config})


START = (
    f"mkdir -p {DATA_DIR} && (setsid docker-registry serve {CONFIG_PATH} </dev/null >>{LOG} 2>&1 & "
    f"echo $! > {PID_FILE})"
)


def daemon(registry: str) -> DaemonSpec:
    """How the registry at `registry` (host:port) runs; ready once it answers over TLS, verified
    against the CA the engines trust."""
    return DaemonSpec(
        name="docker-registry",
        config_path=CONFIG_PATH,
        pid_file=PID_FILE,
        unit="docker-registry",
        start=START,
        # It reads its certificate once, at start: a new one needs a restart, not a signal.
        reload=restart_by_pid(PID_FILE, START),
        systemd_reload="restart",
        ready=f"curl -sf -o /dev/null --cacert {trust_path(registry)} https://{registry}/v2/",
    )
