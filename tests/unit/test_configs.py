"""Docker configs declared by a bundle: names from content, creation and pruning plans, where each
service mounts them, the schema of `configs:` in bundle.yaml, and a deploy with a fake runner."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import flows
from cluster import workload as bundles
from cluster.config import parse_config
from cluster.errors import ConfigErrors, SwarmlabError
from cluster.lab.layout import lab_inventory
from cluster.operations import Run, Write
from cluster.plans.configs import check_mounts, config_mounts, config_name, plan_configs, plan_prune_configs
from cluster.state import StatePaths
from cluster.tasks.deploy import config_contents
from cluster.workload import ConfigSpec, load_workload
from tests.unit.fake_runner import fake_session as session
from tests.unit.test_tasks import deployed_hello

PROM = ConfigSpec(name="prom", file="p.yml", target="/etc/p.yml", services=("prometheus",))
SHARED = ConfigSpec(name="shared", file="s.conf", target="/etc/s.conf", services=("api", "ui"))


def test_a_config_is_named_by_its_content() -> None:
    one = config_name("registration", "prom", "scrape_interval: 15s\n")
    assert one == config_name("registration", "prom", "scrape_interval: 15s\n")
    assert one.startswith("registration_prom_") and len(one.rsplit("_", 1)[1]) == 12
    assert one != config_name("registration", "prom", "scrape_interval: 30s\n"), "a change is a new config"


def test_only_missing_configs_are_created_from_a_file_sent_over_sftp() -> None:
    plan = plan_configs("manager-1", {"r_a_111111111111": "a\n", "r_b_222222222222": "b\n"}, {"r_a_111111111111"})
    writes = [op for op in plan.operations if isinstance(op, Write)]
    assert [w.path for w in writes] == ["/root/.swarmlab/configs/r_b_222222222222"] and writes[0].content == b"b\n"
    [create] = [r for r in plan.runs if "config create" in r.command]
    assert create.command.startswith("docker config create r_b_222222222222 /root/.swarmlab/configs/r_b_")
    assert plan.changes
    assert plan_configs("manager-1", {"r_a_111111111111": "a\n"}, {"r_a_111111111111"}).operations == ()


def test_pruning_removes_only_unused_old_versions_this_tool_named() -> None:
    existing = [
        "registration_prom_aaaaaaaaaaaa",  # current
        "registration_prom_bbbbbbbbbbbb",  # old, unused: pruned
        "registration_prom_cccccccccccc",  # old but still mounted (a rollback): kept
        "registration_handmade",  # not ours
        "hello_prom_dddddddddddd",  # another stack's
    ]
    plan = plan_prune_configs(
        "manager-1", "registration", ["registration_prom_aaaaaaaaaaaa"], existing, {"registration_prom_cccccccccccc"}
    )
    assert [r.command for r in plan.runs] == ["docker config rm registration_prom_bbbbbbbbbbbb"]
    assert all(isinstance(op, Run) and op.changes for op in plan.operations)


def test_mounts_per_service_and_the_check_against_the_rendered_stack() -> None:
    assert config_mounts([PROM, SHARED]) == {
        "prometheus": [{"source": "prom", "target": "/etc/p.yml"}],
        "api": [{"source": "shared", "target": "/etc/s.conf"}],
        "ui": [{"source": "shared", "target": "/etc/s.conf"}],
    }
    names = {"prom": "r_prom_1", "shared": "r_shared_2"}
    stack: dict[str, Any] = {
        "services": {"prometheus": {"configs": [{"source": "prom"}]}, "api": {"configs": ["shared"]}, "ui": {}},
        "configs": {"prom": {"external": True, "name": "r_prom_1"}, "shared": {"external": True, "name": "r_shared_2"}},
    }
    with pytest.raises(
        SwarmlabError, match=r"config shared: bundle.yaml names \['api', 'ui'\], the stack mounts it in \['api'\]"
    ):
        check_mounts(stack, [PROM, SHARED], names, "x/stack.yaml.j2")
    stack["services"]["ui"] = {"configs": [{"source": "shared", "target": "/etc/s.conf"}]}
    check_mounts(stack, [PROM, SHARED], names, "x/stack.yaml.j2")
    with pytest.raises(SwarmlabError, match="config prom: not declared as external config r_prom_9"):
        check_mounts(stack, [PROM, SHARED], names | {"prom": "r_prom_9"}, "x/stack.yaml.j2")


@pytest.fixture
def copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    target = tmp_path / "workloads"
    shutil.copytree(bundles.WORKLOADS_DIR, target)
    monkeypatch.setattr(bundles, "WORKLOADS_DIR", target)
    bundles._manifest.cache_clear()
    yield target
    bundles._manifest.cache_clear()


def edit_bundle(copied: Path, configs: list[dict[str, object]]) -> None:
    path = copied / "registration" / "bundle.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest["configs"] = configs
    path.write_text(yaml.safe_dump(manifest))


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"name": "Bad-Name", "file": "config/rabbitmq.conf", "target": "/x", "services": ["a"]}, "configs.0.name"),
        ({"name": "x", "file": "config/rabbitmq.conf", "target": "relative", "services": ["a"]}, "configs.0.target"),
        ({"name": "x", "file": "config/rabbitmq.conf", "target": "/x", "services": []}, "configs.0.services"),
        ({"name": "x", "file": "config/rabbitmq.conf", "target": "/x", "services": ["a"], "mode": 1}, "configs.0.mode"),
        ({"name": "x", "file": "config/missing.yml", "target": "/x", "services": ["a"]}, "configs.x.file"),
    ],
)
def test_bad_config_entries_name_the_bundle_and_the_key(copied: Path, config: dict[str, object], key: str) -> None:
    edit_bundle(copied, [config])
    with pytest.raises(ConfigErrors) as caught:
        load_workload("registration", "lab")
    assert [e.key.rsplit(": ", 1)[1] for e in caught.value.errors] == [key]
    assert str(copied / "registration" / "bundle.yaml") in str(caught.value)


def test_a_template_config_is_rendered_with_the_values_and_the_cluster_addresses(copied: Path) -> None:
    (copied / "registration" / "config" / "nodes.txt.j2").write_text(
        "{% for n in managers + workers %}{{ n.name }}={{ n.ip }}:{{ engine_metrics_port }}\n{% endfor %}"
        "lb={{ lb.ip }}:{{ lb_metrics_port }} api_user={{ values.api_user }}\n"
    )
    edit_bundle(
        copied,
        [
            {"name": "nodes", "file": "config/nodes.txt.j2", "target": "/etc/nodes.txt", "services": ["api"]},
            {"name": "off", "file": "config/rabbitmq.conf", "target": "/x", "services": ["api"], "when": "nothing"},
        ],
    )
    workload = load_workload("registration", "lab")
    assert [c.name for c in workload.configs] == ["nodes"], "a config whose `when` is false is left out"
    inventory = lab_inventory(parse_config({}), StatePaths(Path("/state")))
    [(name, content)] = config_contents(inventory, workload).values()
    assert content.splitlines()[0] == "manager-1=10.20.0.11:9323"
    assert content.splitlines()[-1] == "lb=10.20.0.5:8405 api_user=api"
    assert name == config_name("registration", "nodes", content)


def test_a_deploy_creates_mounts_and_prunes_configs(copied: Path, tmp_path: Path) -> None:
    hello = copied / "hello"
    (hello / "greeting.txt").write_text("hello\n")
    manifest = yaml.safe_load((hello / "bundle.yaml").read_text())
    manifest["configs"] = [{"name": "greeting", "file": "greeting.txt", "target": "/etc/greeting", "services": ["web"]}]
    (hello / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    template = (
        (hello / "stack.yaml.j2")
        .read_text()
        .replace("    healthcheck:", "    configs: {{ config_mounts.web | tojson }}\n    healthcheck:", 1)
    )
    template += (
        "configs:\n{% for key, name in configs.items() %}  {{ key }}: {external: true, name: {{ name }}}\n{% endfor %}"
    )
    (hello / "stack.yaml.j2").write_text(template)
    current = config_name("hello", "greeting", "hello\n")
    runner = deployed_hello()
    runner.answer(r"docker stack services hello", "hello_web|3/3\n---\nhello_web|\n---\n")
    runner.answer(r"docker config ls", "hello_greeting_0123456789ab\nhello_greeting_aaaaaaaaaaaa\n")
    runner.answer(r"ContainerSpec.Configs", "hello_greeting_aaaaaaaaaaaa\n")  # still mounted: kept
    flows.run(flows.DEPLOY_STACK, session(runner, tmp_path), load_workload("hello", "lab"))
    assert runner.files[("manager-1", f"/root/.swarmlab/configs/{current}")] == b"hello\n"
    assert runner.commands(f"docker config create {current} ")
    stack = yaml.safe_load(runner.files[("manager-1", "/root/.swarmlab/stacks/hello.yml")])
    assert stack["services"]["web"]["configs"] == [{"source": "greeting", "target": "/etc/greeting"}]
    assert stack["configs"]["greeting"] == {"external": True, "name": current}
    assert runner.commands("docker config rm") == ["docker config rm hello_greeting_0123456789ab"]
