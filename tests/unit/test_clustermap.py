"""The cluster map: the page built from the Docker API's answers (recorded from a lab), the plan that
runs it on the managers, and its admin route in HAProxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster import flows
from cluster.errors import SwarmlabError
from cluster.facts.daemons import MapFacts, parse_map_facts
from cluster.operations import Parallel, Wait
from cluster.plans.clustermap import map_route, plan_map, plan_remove
from cluster.tasks.haproxy import configure_haproxy, routes_of
from cluster.workload import load_workload
from clustermap.mapserver import NodeView, TaskView, build_map, render_page, short_image
from tests.unit.fake_runner import fake_session as session
from tests.unit.fake_runner import lab_shaped_inventory as inventory
from tests.unit.test_tasks import deployed_hello

# What the map reads from a manager's Docker API, recorded from a lab.
DOCKER_API = Path(__file__).parent / "docker_api"
MANAGERS = [("manager-1", "10.20.0.11"), ("manager-2", "10.20.0.12"), ("manager-3", "10.20.0.13")]
IMAGE = "10.20.0.6:5000/swarmlab/clustermap:abc"


def recorded(name: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = json.loads((DOCKER_API / name).read_text())
    return found


def test_the_map_of_a_lab_has_every_node_and_its_running_tasks() -> None:
    views = build_map(recorded("api_nodes.json"), recorded("api_services.json"), recorded("api_tasks.json"))
    assert [v.hostname for v in views] == ["manager-1", "manager-2", "manager-3", "worker-1", "worker-2", "worker-3"]
    assert [v.manager for v in views[:3]].count("leader") == 1 and all(v.availability == "drain" for v in views[:3])
    assert all(not v.tasks for v in views[:3]), "drained managers run no task"
    assert sum(len(v.tasks) for v in views) == 17
    worker_1 = views[3]
    assert ("registration_api", "3", "running") in {(t.service, t.slot, t.state) for t in worker_1.tasks}
    assert all(":" in t.image and "@" not in t.image and "/" not in t.image for v in views for t in v.tasks)


def test_the_page_escapes_what_it_shows_and_refreshes_itself() -> None:
    node = NodeView(
        "<b>w1</b>", "worker", "active", "down", "10.0.0.1", "", [TaskView("x<y", "1", "running", "a:b", "")]
    )
    page = render_page([node], "manager-1", 0)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "&lt;b&gt;w1&lt;/b&gt;" in page and "x&lt;y.1" in page and "<b>w1</b>" not in page
    assert 'class="node down"' in page and "read from manager-1" in page
    # Its style is a file (the edge's Content-Security-Policy allows no inline style).
    assert "<style" not in page and " style=" not in page and '<link rel="stylesheet" href="style.css">' in page
    assert short_image("10.0.0.6:5000/swarmlab/app:abc@sha256:0123") == "app:abc"


def test_the_map_starts_where_it_is_missing_stopped_or_old_and_waits_for_each() -> None:
    facts = {
        "manager-1": MapFacts(IMAGE, True),
        "manager-2": MapFacts(IMAGE, False),
        "manager-3": parse_map_facts(""),
    }
    plan = plan_map(MANAGERS, facts, IMAGE, 9080)
    [start, *waits] = plan.operations
    assert isinstance(start, Parallel) and [r.node for r in start.runs] == ["manager-2", "manager-3"]
    command = start.runs[0].command
    assert (
        "--hostname manager-2 " in command
        and "-p 10.20.0.12:9080:8080" in command
        and "docker.sock:/var/run/docker.sock:ro" in command
    )
    for hardening in ("--read-only", "--cap-drop ALL", "no-new-privileges", "--restart unless-stopped"):
        assert hardening in command
    assert all(isinstance(w, Wait) and "http://10.20.0." in w.command for w in waits) and len(waits) == 2
    current = {name: MapFacts(IMAGE, True) for name, _ in MANAGERS}
    assert not plan_map(MANAGERS, current, IMAGE, 9080).changes
    assert plan_map(MANAGERS, current, IMAGE.replace("abc", "new"), 9080).changes
    assert parse_map_facts(f"{IMAGE}|true\n") == MapFacts(IMAGE, True)
    assert [r.node for r in plan_remove(["manager-1", "manager-3"], facts).runs] == ["manager-1"]


def test_the_map_route_is_on_the_managers_for_the_admin_only_and_reserved() -> None:
    route = map_route(MANAGERS, 9080)
    assert route.admin and route.strip_prefix and route.servers == tuple(MANAGERS)
    hello = load_workload("hello", "lab")
    clash = type(hello)(
        hello.manifest.model_copy(update={"routes": (hello.manifest.routes[0].model_copy(update={"path": "/map/"}),)}),
        hello.directory,
        hello.environment,
        hello.values,
    )
    with pytest.raises(SwarmlabError, match="the cluster's clustermap and stack hello both claim route path /map/"):
        routes_of([clash], reserved=(route,))


def test_fab_cluster_map_runs_it_on_the_managers_and_haproxy_routes_it(tmp_path: Path) -> None:
    runner = deployed_hello()
    flows.run(flows.DEPLOY_MAP, session(runner, tmp_path))
    assert runner.commands(r"docker build .*/swarmlab/clustermap:")
    assert sorted(c.node for c in runner.calls if "docker run -d --name swarmlab-map" in c.command) == [
        "manager-1",
        "manager-2",
        "manager-3",
    ]
    configure_haproxy(session(runner, tmp_path), inventory().node("manager-1"))
    cfg = runner.files[("lb-1", "/etc/haproxy/haproxy.cfg.new")].decode()
    backend = cfg.split("\nbackend clustermap")[1].split("\nbackend ")[0]
    assert "server manager-1 10.20.0.11:9080 check" in backend and "http-request auth" in backend
    assert "use_backend clustermap if { path_beg /map/ }" in cfg
    credentials = json.loads((tmp_path / "static" / "demo" / "credentials").read_text())
    assert credentials["admin_password"] not in cfg
