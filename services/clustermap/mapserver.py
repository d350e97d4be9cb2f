"""The cluster map: a page of the swarm's nodes and the tasks running on each, refreshed every few seconds.

It runs as a plain container (not a swarm task: the managers are drained, and Drain refuses every
task, whatever its constraints) on each manager, reads the swarm through that manager's Docker socket
and serves on the manager's private address; HAProxy routes /map/ to the managers, for the admin
credential only. Python's standard library only.

The socket gives full control of the engine even when mounted read-only, so this program only ever
sends GET requests to three fixed API paths, and takes nothing from the HTTP request into them.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API = "/v1.41"
SOCKET = os.environ.get("DOCKER_SOCKET", "/var/run/docker.sock")
REFRESH_SECONDS = 5
RUNNING_TASKS = "/tasks?filters=" + urllib.parse.quote(json.dumps({"desired-state": ["running"]}))


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the engine's Unix socket."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def engine_get(path: str, socket_path: str = SOCKET) -> Any:
    """GET one Docker API path (never anything else) and decode its JSON."""
    connection = UnixConnection(socket_path)
    try:
        connection.request("GET", API + path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: the engine answered {response.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


@dataclass(frozen=True)
class TaskView:
    service: str
    slot: str
    state: str
    image: str  # name:tag, without the registry and the digest
    since: str


@dataclass(frozen=True)
class NodeView:
    hostname: str
    role: str
    availability: str
    state: str
    address: str
    manager: str  # leader | reachable | unreachable | "" for a worker
    tasks: list[TaskView] = field(default_factory=list)


def short_image(reference: str) -> str:
    return reference.split("@", 1)[0].rsplit("/", 1)[-1]


def build_map(
    nodes: list[dict[str, Any]], services: list[dict[str, Any]], tasks: list[dict[str, Any]]
) -> list[NodeView]:
    """The Docker API's nodes, services and running tasks, as one view per node (managers first)."""
    names = {s["ID"]: s["Spec"]["Name"] for s in services}
    by_node: dict[str, list[TaskView]] = {}
    for task in tasks:
        slot = task.get("Slot")
        view = TaskView(
            service=names.get(task.get("ServiceID", ""), task.get("ServiceID", "?")[:12]),
            slot=str(slot) if slot is not None else "global",
            state=task["Status"]["State"],
            image=short_image(task["Spec"]["ContainerSpec"]["Image"]),
            since=task["Status"].get("Timestamp", "")[:19].replace("T", " "),
        )
        by_node.setdefault(task.get("NodeID", ""), []).append(view)
    views = []
    for node in nodes:
        status = node.get("ManagerStatus") or {}
        manager = "leader" if status.get("Leader") else str(status.get("Reachability", ""))
        views.append(
            NodeView(
                hostname=node["Description"]["Hostname"],
                role=node["Spec"]["Role"],
                availability=node["Spec"]["Availability"],
                state=node["Status"]["State"],
                address=node["Status"].get("Addr", ""),
                manager=manager,
                tasks=sorted(by_node.get(node["ID"], []), key=lambda t: (t.service, t.slot)),
            )
        )
    return sorted(views, key=lambda v: (v.role != "manager", v.hostname))


def read_map(socket_path: str = SOCKET) -> list[NodeView]:
    return build_map(
        engine_get("/nodes", socket_path), engine_get("/services", socket_path), engine_get(RUNNING_TASKS, socket_path)
    )


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;background:#f6f7f9;color:#222}
h1{font-size:20px;margin:0 0 .2em} .meta{color:#666;margin-bottom:1em}
.nodes{display:flex;flex-wrap:wrap;gap:12px}
.node{background:#fff;border:1px solid #d5d9e0;border-radius:8px;padding:10px 12px;min-width:250px}
.node h2{font-size:15px;margin:0 0 .3em} .down{border-color:#d33;background:#fff4f4}
.tag{display:inline-block;font-size:11px;padding:1px 6px;border-radius:9px;background:#e8ecf2;margin-right:4px}
.leader{background:#ffe9a8} .drain{background:#f0d9ff}
ul{list-style:none;padding:0;margin:.4em 0 0} li{padding:2px 0;border-top:1px solid #eef0f3}
.svc{font-weight:600} .img{color:#667;font-size:12px} .empty{color:#999;font-style:italic}
"""


def render_page(views: list[NodeView], answered_by: str, now: float) -> str:
    cards = []
    for node in views:
        tags = [node.role, node.state, node.availability] + ([node.manager] if node.manager else [])
        badges = "".join(f'<span class="tag {html.escape(t)}">{html.escape(t)}</span>' for t in tags)
        rows = (
            "".join(
                f'<li><span class="svc">{html.escape(t.service)}.{html.escape(t.slot)}</span> '
                f'{html.escape(t.state)} <span class="img">{html.escape(t.image)} since {html.escape(t.since)}</span></li>'
                for t in node.tasks
            )
            or '<li class="empty">no task</li>'
        )
        down = " down" if node.state != "ready" else ""
        cards.append(
            f'<div class="node{down}"><h2>{html.escape(node.hostname)} '
            f'<span class="img">{html.escape(node.address)}</span></h2>{badges}<ul>{rows}</ul></div>'
        )
    tasks = sum(len(v.tasks) for v in views)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        # The style is a file of its own (style.css, relative: the page is served under /map/), not
        # inline: the edge's Content-Security-Policy allows 'self' only.
        f'<title>swarm map</title><link rel="stylesheet" href="style.css"></head><body><h1>Swarm map</h1>'
        f'<div class="meta">{len(views)} nodes, {tasks} running tasks; read from {html.escape(answered_by)} at '
        f"{stamp}; refreshes every {REFRESH_SECONDS}s</div>"
        f'<div class="nodes">{"".join(cards)}</div></body></html>\n'
    )


class Handler(BaseHTTPRequestHandler):
    server_version = "swarmlab-map"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/healthz":
                engine_get("/nodes")  # healthy only while the swarm answers through this manager
                self.reply(200, b"ok\n", "text/plain")
            elif path == "/style.css":
                self.reply(200, STYLE.encode(), "text/css")
            elif path == "/map.json":
                self.reply(200, json.dumps([asdict(v) for v in read_map()]).encode(), "application/json")
            elif path == "/":
                page = render_page(read_map(), socket.gethostname(), time.time())
                self.reply(200, page.encode(), "text/html; charset=utf-8")
            else:
                self.reply(404, b"not found\n", "text/plain")
        except (OSError, RuntimeError, ValueError, KeyError) as error:
            self.reply(503, f"the swarm does not answer here: {type(error).__name__}\n".encode(), "text/plain")

    def reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # HAProxy's health checks every second would fill the log


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    print(f"cluster map on :{port}, reading {SOCKET}", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
