"""HAProxy's configuration as data, built from the inventory and a stack's routes (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster.inventory import Inventory
from cluster.stacks import Route
from rendering.render import render

CONFIG_PATH = "/etc/haproxy/haproxy.cfg"
STATS_PORT = 8404


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

    @property
    def is_default(self) -> bool:
        return self.path_prefix == "/"


@dataclass(frozen=True)
class HAProxyConfig:
    cluster: str
    http_port: int
    stats_port: int
    backends: tuple[Backend, ...]

    @property
    def default_backend(self) -> Backend | None:
        return next((b for b in self.backends if b.is_default), None)

    @property
    def path_backends(self) -> tuple[Backend, ...]:
        # Longest prefix first, so /api/docs would win over /api/ if both existed.
        return tuple(sorted((b for b in self.backends if not b.is_default), key=lambda b: -len(b.path_prefix)))


def build(
    inventory: Inventory, routes: Sequence[Route], http_port: int = 80, stats_port: int = STATS_PORT
) -> HAProxyConfig:
    """One backend per route, one server per worker (edge services run one task per worker)."""
    backends = tuple(
        Backend(
            name=route.name,
            path_prefix=route.path_prefix,
            health_path=route.health_path,
            servers=tuple(Server(w.name, str(w.private_ip), route.port) for w in inventory.workers),
            strip_prefix=route.strip_prefix,
        )
        for route in routes
    )
    return HAProxyConfig(inventory.cluster, http_port, stats_port, backends)


def render_config(config: HAProxyConfig) -> str:
    return render("haproxy/haproxy.cfg.j2", {"config": config})
