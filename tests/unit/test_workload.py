"""Workload bundles: a directory per stack, read by the generic deployer; its values checked against
its schema before anything is touched, every problem naming the file and the key."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import topology
from cluster import workload as bundles
from cluster.errors import ConfigErrors
from cluster.workload import RouteSpec, known_workloads, load_workload, lookup


def test_the_bundles_in_the_tree() -> None:
    assert known_workloads() == ("hello", "registration")
    hello = load_workload("hello", "lab")
    assert hello.values is None and [r.path for r in hello.routes] == ["/hello/"]
    registration = load_workload("registration", "lab")
    assert registration.storage_mode == "auto" and registration.image_overrides == {}
    assert [d.name for d in registration.manifest.data] == ["postgres", "redis"]
    assert [s.name for s in registration.file_secrets] == [], "the lab's SMTP has no login"
    assert [s.name for s in load_workload("registration", "prod").file_secrets] == ["smtp_password"]


def test_lookup_follows_dotted_keys() -> None:
    assert lookup({"smtp": {"user": "u"}}, "smtp.user") == "u"
    assert lookup({"smtp": {}}, "smtp.user") is None and lookup(None, "x") is None


@pytest.fixture
def copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the workloads directory to break things in."""
    target = tmp_path / "workloads"
    shutil.copytree(bundles.WORKLOADS_DIR, target)
    monkeypatch.setattr(bundles, "WORKLOADS_DIR", target)
    bundles._manifest.cache_clear()
    yield target
    bundles._manifest.cache_clear()


def test_a_bad_value_names_the_values_file_and_the_key(copied: Path) -> None:
    path = copied / "registration" / "values" / "lab.yaml"
    values = yaml.safe_load(path.read_text()) | {"worker_replicas": 0, "storage": "tape"}
    values["smtp"]["port"] = "25"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigErrors) as caught:
        load_workload("registration", "lab")
    keys = [e.key for e in caught.value.errors]
    assert keys == ["lab.yaml: smtp.port", "lab.yaml: storage", "lab.yaml: worker_replicas"]


def test_an_unknown_value_is_refused(copied: Path) -> None:
    path = copied / "registration" / "values" / "lab.yaml"
    path.write_text(path.read_text() + "replicas_of_everything: 9\n")
    with pytest.raises(ConfigErrors, match="replicas_of_everything"):
        load_workload("registration", "lab")


def test_a_malformed_bundle_names_the_manifest_and_the_key(copied: Path) -> None:
    path = copied / "hello" / "bundle.yaml"
    path.write_text(path.read_text().replace("path: /hello/", "path: hello"))
    with pytest.raises(ConfigErrors) as caught:
        load_workload("hello", "lab")
    assert "bundle.yaml: routes.0.path" in str(caught.value)


def test_every_shipped_route_publishes_a_port_the_cloud_opens() -> None:
    first, last = topology.ROUTE_PORTS
    for name in known_workloads():
        manifest, _ = bundles._manifest(name)
        assert manifest.routes, name
        assert all(first <= route.port <= last for route in manifest.routes), name  # `when` routes too


@pytest.mark.parametrize("port", [8000, 8099])
def test_a_route_port_at_either_end_of_the_range_is_accepted(port: int) -> None:
    assert RouteSpec(name="x", path="/x/", port=port).port == port


@pytest.mark.parametrize("port", [80, 7999, 8100, 9080])
def test_a_route_port_outside_the_cloud_opening_names_bundle_route_port_and_range(copied: Path, port: int) -> None:
    path = copied / "hello" / "bundle.yaml"
    path.write_text(path.read_text().replace("port: 8090", f"port: {port}"))
    with pytest.raises(ConfigErrors) as caught:
        load_workload("hello", "lab")
    [error] = caught.value.errors
    assert error.key == f"{path}: routes.0.port" and error.value == port
    assert error.problem.startswith(f"route 'hello' publishes port {port}, outside 8000-8099: the cloud's security")
    assert error.fix == "give route 'hello' a free port in 8000-8099"


def test_a_new_stack_is_a_new_directory(copied: Path) -> None:
    shutil.copytree(copied / "hello", copied / "second")
    manifest = copied / "second" / "bundle.yaml"
    manifest.write_text(manifest.read_text().replace("name: hello", "name: second"))
    assert "second" in known_workloads() and load_workload("second", "lab").name == "second"


def test_a_values_file_given_is_merged_over_the_environments_and_checked(tmp_path: Path) -> None:
    overlay = tmp_path / "more.yaml"
    overlay.write_text("worker_replicas: 2\nprometheus: {retention: 5d}\n")
    values = load_workload("registration", "lab", overlay).values or {}
    assert values["worker_replicas"] == 2 and values["edge_replicas"] == 3
    assert values["prometheus"] == {"public": True, "retention": "5d"}  # merged key by key
    overlay.write_text("worker_replicas: 0\n")
    with pytest.raises(ConfigErrors, match=r"more.yaml: worker_replicas=0: 0 is less than the minimum of 1"):
        load_workload("registration", "lab", overlay)


@pytest.mark.parametrize("csp", ['default-src "self"', "default-src 'self'\n    server evil 1.2.3.4:80", "a %[src]"])
def test_a_route_policy_that_could_break_out_of_haproxy_cfg_is_refused(csp: str) -> None:
    with pytest.raises(ValueError, match="csp"):
        RouteSpec(name="x", path="/x/", port=8000, csp=csp)
    assert RouteSpec(name="x", path="/x/", port=8000, csp="default-src 'self'; img-src data:").csp
