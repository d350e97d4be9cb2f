"""Rendering against golden files. Regenerate after an intended change with UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

import topology
from cluster.config import parse_config
from cluster.lab.build import node_build_context
from cluster.lab.topology import lab_inventory
from cluster.state import StatePaths
from cluster.tasks.deploy import StackInput, render_stack
from cluster.tasks.haproxy import routes_of
from cluster.workload import load_workload
from haproxy.model import build, render_config
from rendering.provision import ROLES, ProvisionInput, daemon_json, engine_metrics_ip, provision_script
from rendering.render import render

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text()


HELLO = load_workload("hello", "lab")


def haproxy_cfg(workers: int = 3) -> str:
    inventory = lab_inventory(parse_config({"workers": workers}), StatePaths(Path("/state")))
    servers = [(w.name, str(w.private_ip)) for w in inventory.workers]
    return render_config(build(inventory.cluster, servers, routes_of([HELLO])))


def test_haproxy_cfg_for_the_hello_stack() -> None:
    text = haproxy_cfg()
    check_golden("haproxy-hello.cfg", text)
    for worker in ("10.20.0.21:8090", "10.20.0.22:8090", "10.20.0.23:8090"):
        assert f" {worker} check" in text
    assert "retry-on conn-failure" in text and "option redispatch" in text and "master-worker" in text
    assert "use_backend hello if { path_beg /hello/ }" in text and "default_backend" not in text


def test_haproxy_cfg_grows_with_the_workers() -> None:
    assert haproxy_cfg(workers=5).count("server worker-") == 5


def test_hello_stack() -> None:
    data = StackInput(images={"hello": "10.20.0.6:5000/swarmlab/hello:abc"}, ports={"hello": 8090})
    text = render_stack(HELLO, data)
    check_golden("stack-hello.yaml", text)
    web = yaml.safe_load(text)["services"]["web"]
    assert web["ports"][0]["mode"] == "host" and web["ports"][0]["published"] == 8090
    assert web["deploy"]["mode"] == "global"
    assert web["deploy"]["placement"]["constraints"] == ["node.role == worker"]
    assert "healthcheck" in web


@pytest.mark.parametrize("role", ROLES)
def test_provision_scripts(role: str) -> None:
    text = provision_script(role)
    check_golden(f"provision-{role}.sh", text)
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)
    assert "PasswordAuthentication no" in text


def test_storage_script_takes_its_paths_and_registry_port_from_topology() -> None:
    text = provision_script("storage")
    assert f"mkdir -p /var/run/ganesha {topology.EXPORT_DIR} " in text
    assert f"  addr: :{topology.REGISTRY_PORT}\n" in text
    assert f'target="${{SWARMLAB_DATA_MOUNTPOINT:-{topology.DATA_ROOT}}}"' in text
    # Other values show through everywhere: no literal copy of the facts is left in the template.
    moved = render(
        "provision/storage.sh.j2",
        ProvisionInput("storage", data_root="/var/lab", export_dir="/var/lab/export", registry_port=5999),
    )
    assert "/srv/swarmlab" not in moved and ":5000" not in moved
    assert "mkdir -p /var/run/ganesha /var/lab/export " in moved and "addr: :5999" in moved
    assert 'SWARMLAB_DATA_MOUNTPOINT:-/var/lab}"' in moved


def test_daemon_json_points_at_the_cluster_registry() -> None:
    assert '"insecure-registries": ["10.20.0.6:5000"]' in daemon_json("10.20.0.6:5000")


def test_daemon_json_serves_engine_metrics_on_the_private_address_of_swarm_nodes_only() -> None:
    worker = json.loads(daemon_json("10.20.0.6:5000", engine_metrics_ip("worker", "10.20.0.21")))
    assert worker["metrics-addr"] == "10.20.0.21:9323"  # never 0.0.0.0: the cluster network only
    assert json.loads(daemon_json("10.20.0.6:5000", engine_metrics_ip("manager", "10.20.0.11")))["metrics-addr"]
    assert "metrics-addr" not in json.loads(daemon_json("10.20.0.6:5000", engine_metrics_ip("storage", "10.20.0.6")))


def test_missing_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render("docker/daemon.json.j2", {})


def test_node_image_tag_changes_with_the_provisioning_scripts() -> None:
    one = node_build_context(parse_config({}), "base:1")
    assert one.tag == node_build_context(parse_config({}), "base:1").tag
    assert one.tag != node_build_context(parse_config({}), "base:2").tag
    assert one.tag != node_build_context(parse_config({"debian_suite": "trixie"}), "base:1").tag
