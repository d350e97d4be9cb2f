"""Monitoring, pure parts: HAProxy's admin routes and Prometheus exporter, the stack's Prometheus
(its configuration, the bundle's `prometheus:` spec) and what `fab status` prints from it."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cluster import workload as bundles
from cluster.config import parse_config
from cluster.errors import ConfigErrors
from cluster.facts.prometheus import parse_prometheus_vector, prometheus_vector
from cluster.facts.swarm import parse_node_list
from cluster.facts.tasks import parse_node_tasks
from cluster.lab.layout import lab_inventory
from cluster.state import StatePaths
from cluster.tasks.deploy import config_contents
from cluster.tasks.haproxy import routes_of
from cluster.tasks.status import format_map, rates_query, rates_report, rates_table
from cluster.workload import load_workload
from haproxy.model import Route, Tls, admin_digest, build, render_config
from tests.unit.fake_runner import FakeRunner
from tests.unit.recorded import recorded
from tests.unit.test_observability import MANAGER, session

WORKERS = [("worker-1", "10.20.0.21"), ("worker-2", "10.20.0.22")]
TLS = Tls("0" * 64, None)  # a certificate digest; HTTPS on 443, no redirect port


def test_the_admin_digest_is_what_haproxy_computes_from_the_authorization_header() -> None:
    header = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert admin_digest("s3cret") == hashlib.sha256(header.encode()).hexdigest().upper()
    assert admin_digest("s3cret") != admin_digest("s3cret2")


def test_admin_routes_ask_for_the_credential_and_hold_only_its_digest() -> None:
    routes = (Route("ui", "/", 8000), Route("prometheus", "/prometheus/", 8095, "/prometheus/-/healthy", admin=True))
    text = render_config(
        build("demo", WORKERS, routes, TLS, private_address="10.20.0.5", admin_password_digest=admin_digest("s3cret"))
    )
    prometheus = text.split("\nbackend prometheus")[1].split("\nbackend ")[0]
    assert f"-m str {admin_digest('s3cret')} }}" in prometheus and "http-request auth realm" in prometheus
    assert "s3cret" not in text and base64.b64encode(b"admin:s3cret").decode() not in text
    assert "http-request auth" not in text.split("\nbackend ui")[1].split("\nbackend prometheus")[0]
    # Without a credential an admin route lets nobody in.
    closed = render_config(build("demo", WORKERS, routes, TLS))
    assert "http-request deny deny_status 403" in closed and "http-request auth" not in closed


def test_the_prometheus_exporter_listens_on_the_private_address_only() -> None:
    text = render_config(build("demo", WORKERS, (Route("ui", "/", 8000),), TLS, private_address="10.20.0.5"))
    metrics = text.split("frontend metrics")[1].split("\n\n")[0]
    assert "bind 10.20.0.5:8405" in metrics and "use-service prometheus-exporter if { path /metrics }" in metrics
    assert "frontend metrics" not in render_config(build("demo", WORKERS, (Route("ui", "/", 8000),), TLS))


def test_a_route_can_name_its_own_servers() -> None:
    managers = (("manager-1", "10.20.0.11"),)
    config = build("demo", WORKERS, (Route("map", "/map/", 9080, servers=managers, admin=True),), TLS)
    assert [(s.name, s.address, s.port) for s in config.backends[0].servers] == [("manager-1", "10.20.0.11", 9080)]


def test_the_lab_serves_prometheus_behind_the_admin_credential_and_prod_does_not() -> None:
    lab = {r.name: r for r in routes_of([load_workload("registration", "lab")])}
    assert lab["prometheus"].admin and lab["prometheus"].path_prefix == "/prometheus/"
    assert not lab["ui"].admin and not lab["api"].admin
    assert "prometheus" not in {r.name for r in routes_of([load_workload("registration", "prod")])}


def test_prometheus_scrapes_every_engine_haproxy_and_the_services_by_dns() -> None:
    inventory = lab_inventory(parse_config({}), StatePaths(Path("/state")))
    for environment, mailsink in (("lab", True), ("prod", False)):
        contents = config_contents(inventory, load_workload("registration", environment))
        _, text = contents["prometheus_yml"]
        jobs = {job["job_name"]: job for job in yaml.safe_load(text)["scrape_configs"]}
        engines = [t for group in jobs["docker-engines"]["static_configs"] for t in group["targets"]]
        assert engines == [f"10.20.0.{n}:9323" for n in (11, 12, 13, 21, 22, 23)]
        assert jobs["haproxy"]["static_configs"][0]["targets"] == ["10.20.0.5:8405"]
        names = jobs["services"]["dns_sd_configs"][0]["names"]
        assert {"tasks.ui", "tasks.api", "tasks.otp", "tasks.email_otp"} <= set(names)
        assert ("tasks.mailsink" in names) is mailsink
        assert jobs["services"]["relabel_configs"][0]["target_label"] == "service"


@pytest.fixture
def copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    target = tmp_path / "workloads"
    shutil.copytree(bundles.WORKLOADS_DIR, target)
    monkeypatch.setattr(bundles, "WORKLOADS_DIR", target)
    bundles._manifest.cache_clear()
    yield target
    bundles._manifest.cache_clear()


def test_the_prometheus_spec_must_name_a_route_of_the_bundle(copied: Path) -> None:
    path = copied / "registration" / "bundle.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest["prometheus"]["route"] = "nowhere"
    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ConfigErrors, match=r"prometheus\.route 'nowhere' is not one of the bundle's routes"):
        load_workload("registration", "lab")


VECTOR = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {"metric": {"service": "api", "kind": "requests"}, "value": [1795623000.0, "1.5"]},
            {"metric": {"service": "api", "kind": "errors"}, "value": [1795623000.0, "0.25"]},
            {"metric": {"service": "otp", "kind": "requests"}, "value": [1795623000.0, "0.2"]},
        ],
    },
}


def test_rates_from_one_query_of_both_kinds() -> None:
    query = rates_query("sum by (service) (rate(a[1m]))", "sum by (service) (rate(b[1m]))")
    assert query.startswith('label_replace((sum by (service) (rate(a[1m]))), "kind", "requests", "", "") or ')
    samples = parse_prometheus_vector(json.dumps(VECTOR), "service", "kind")
    assert samples[("api", "errors")] == 0.25
    assert rates_table(samples).splitlines() == [
        "SERVICE  REQ/S  ERR/S",
        "api      1.50   0.25",
        "otp      0.20   0.00",
    ]
    with pytest.raises(ValueError, match="Prometheus answered error: bad query"):
        parse_prometheus_vector('{"status": "error", "error": "bad query"}')


def test_the_query_goes_to_each_worker_in_turn_and_is_quoted() -> None:
    command = prometheus_vector(["10.20.0.21", "10.20.0.22"], 8095, "/prometheus", 'up{job="x"}', ()).command
    assert command.startswith("for ip in 10.20.0.21 10.20.0.22; do curl -sf -m 3 -G ")
    assert '"http://$ip:8095/prometheus/api/v1/query"' in command
    assert "--data-urlencode 'query=up{job=\"x\"}'" in command


def status_runner() -> FakeRunner:
    runner = FakeRunner(lab_inventory(parse_config({}), StatePaths(Path("/state"))))
    runner.answer(r"docker info", MANAGER, node="manager-1")
    runner.answer(r"docker stack ls", "registration\n")
    return runner


def test_status_asks_prometheus_from_the_lb_node(tmp_path: Path) -> None:
    runner = status_runner()
    runner.answer(r"api/v1/query", json.dumps(VECTOR), node="lb-1")
    report = rates_report(session(runner, tmp_path), runner.inventory.node("manager-1"))
    assert "(Prometheus of registration):\nSERVICE  REQ/S  ERR/S\napi      1.50   0.25" in report
    [call] = [c for c in runner.calls if "api/v1/query" in c.command]
    assert call.node == "lb-1" and "10.20.0.21 10.20.0.22 10.20.0.23" in call.command


def test_status_says_when_prometheus_does_not_answer(tmp_path: Path) -> None:
    runner = status_runner()
    runner.answer(r"api/v1/query", "", exit_code=1)
    report = rates_report(session(runner, tmp_path), runner.inventory.node("manager-1"))
    assert report.endswith("Prometheus did not answer (no worker answered on port 8095)")


def test_the_map_lists_every_node_and_its_tasks() -> None:
    nodes = parse_node_list(recorded("node_ls"))
    tasks = parse_node_tasks(recorded("node_tasks"))
    text = format_map(nodes, [t for t in tasks if t.node != "worker-3"])
    lines = text.splitlines()
    assert lines[0].startswith("manager-1 (manager, leader; ready, drain): 0 task(s)")
    worker_1 = lines.index(next(line for line in lines if line.startswith("worker-1 ")))
    assert lines[worker_1].endswith(": 5 task(s)")
    assert lines[worker_1 + 1].split()[:2] == ["registration_api.3", "app:c9ee648dc4d6"]
    assert any(line.startswith("worker-3 (worker; ready, active): 0 task(s)") for line in lines)
