"""The haproxy task: render haproxy.cfg from the inventory, validate it on the lb node, swap it in and
reload without dropping connections."""

from __future__ import annotations

import time

from cluster.errors import SwarmlabError
from cluster.progress import phase
from cluster.runners import Nodes
from cluster.stacks import Route
from cluster.tasks.daemon import push_config
from haproxy.model import build, render_config
from haproxy.plan import HAPROXY

STATS_WAIT = 20


def configure_haproxy(nodes: Nodes, routes: tuple[Route, ...]) -> None:
    with phase("haproxy", "render haproxy.cfg from the inventory, validate, swap in and reload") as p:
        lb = nodes.inventory.lb
        config = build(nodes.inventory, routes)
        if not push_config(nodes, lb, HAPROXY, render_config(config), p):
            return
        check = f"curl -sf -o /dev/null http://127.0.0.1:{config.stats_port}/stats"
        deadline = time.monotonic() + STATS_WAIT
        while not nodes.run(lb, check, check=False).ok:
            if time.monotonic() > deadline:
                raise SwarmlabError(f"HAProxy on {lb.name} does not answer on :{config.stats_port} after the reload")
            time.sleep(0.5)
