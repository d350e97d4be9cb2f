"""The cluster's image registry on the storage node (Debian's docker-registry, distribution 2.8), pure:
typed input in, its configuration texts and daemon specs out. A leaf model: nothing of cluster/.

Two processes of the registry share one storage directory:
- the public endpoint (:5000) serves TLS only, with a certificate the cluster CA issues for its
  address; every engine trusts that CA for this registry alone (/etc/docker/certs.d/<host:port>/ca.crt),
  so no engine needs `insecure-registries`. It is read-only (distribution's maintenance mode): pulls
  are answered, pushes and deletes get 405, whoever reaches it;
- the writable endpoint listens on the storage node's loopback only (plain HTTP: Docker treats
  127.0.0.0/8 as an insecure registry by default, and nothing crosses the network): only a process on
  the storage node (its builds, the image cache's copies) can push. Reaching it is the credential.
A tag pushed through the writable one is served by the public one at once: each reads the manifests
from the shared directory at every request (no cache configured).
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
BINARY = "/usr/bin/docker-registry"

# The writable endpoint: its own configuration, pid file, log and (on systemd) unit of ours.
PUSH_ENDPOINT = f"127.0.0.1:{topology.REGISTRY_PUSH_PORT}"
PUSH_CONFIG_PATH = "/etc/docker/registry/push.yml"
PUSH_PID_FILE = "/run/docker-registry-push.pid"
PUSH_LOG = "/var/log/docker-registry-push.log"
PUSH_UNIT = "docker-registry-push"
PUSH_UNIT_PATH = f"/etc/systemd/system/{PUSH_UNIT}.service"


def trust_dir(registry: str) -> str:
    """The directory of the CAs an engine (and skopeo's --cert-dir) trusts for one registry (host:port)."""
    return f"/etc/docker/certs.d/{registry}"


def trust_path(registry: str) -> str:
    """Where an engine looks for the CA of one registry (host:port): Docker reads it at each pull and push."""
    return f"{trust_dir(registry)}/ca.crt"


@dataclass(frozen=True)
class RegistryConfig:
    addr: str  # ":5000" (every address) or "127.0.0.1:5001" (the loopback only)
    readonly: bool  # pulls only: pushes and deletes answer 405
    # In the file, so that a new certificate changes it and the push restarts the registry; None: no TLS.
    certificate_sha: str | None
    root_dir: str = DATA_DIR
    cert_path: str = CERT_PATH
    key_path: str = KEY_PATH


def build(certificate_sha: str, port: int = topology.REGISTRY_PORT) -> RegistryConfig:
    """The public endpoint: TLS on every address, read-only."""
    return RegistryConfig(f":{port}", readonly=True, certificate_sha=certificate_sha)


def build_push(port: int = topology.REGISTRY_PUSH_PORT) -> RegistryConfig:
    """The writable endpoint: the loopback only, plain HTTP."""
    return RegistryConfig(f"127.0.0.1:{port}", readonly=False, certificate_sha=None)


def render_config(config: RegistryConfig) -> str:
    return render("registry/config.yml.j2", {"config": config})


def render_push_unit() -> str:
    """The writable endpoint's systemd unit (Debian's package has a unit for one configuration only)."""
    return render(
        "registry/docker-registry-push.service.j2",
        {"user": SERVICE_USER, "binary": BINARY, "config_path": PUSH_CONFIG_PATH, "endpoint": PUSH_ENDPOINT},
    )


def _start(config_path: str, log: str, pid_file: str) -> str:
    return (
        f"mkdir -p {DATA_DIR} && (setsid docker-registry serve {config_path} </dev/null >>{log} 2>&1 & "
        f"echo $! > {pid_file})"
    )


START = _start(CONFIG_PATH, LOG, PID_FILE)
PUSH_START = _start(PUSH_CONFIG_PATH, PUSH_LOG, PUSH_PID_FILE)


def daemon(registry: str) -> DaemonSpec:
    """How the public registry at `registry` (host:port) runs; ready once it answers over TLS, verified
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


def push_daemon() -> DaemonSpec:
    """How the writable endpoint runs; ready once it answers on the loopback."""
    return DaemonSpec(
        name="docker-registry-push",
        config_path=PUSH_CONFIG_PATH,
        pid_file=PUSH_PID_FILE,
        unit=PUSH_UNIT,
        start=PUSH_START,
        reload=restart_by_pid(PUSH_PID_FILE, PUSH_START),  # distribution reloads nothing on a signal
        systemd_reload="restart",
        ready=f"curl -sf -o /dev/null http://{PUSH_ENDPOINT}/v2/",
    )
