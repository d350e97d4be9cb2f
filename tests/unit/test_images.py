"""Image recipes and cache keys: a change to one file rebuilds the images that hold it (and what builds
FROM them) and nothing else; independent images build at once; a registry that has everything
builds nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cluster.images import Build, workload_builds
from cluster.operations import Parallel, Run
from cluster.plans.images import parse_registry_check, plan_builds, registry_check_command
from cluster.workload import REPO_ROOT, load_workload

REGISTRY = "10.20.0.6:5000"
SPECS = load_workload("registration", "lab").manifest.images


def tags(root: Path = REPO_ROOT, base: str = "swarmlab/debian:bookworm-1") -> dict[str, str]:
    builds = workload_builds(SPECS, base, REGISTRY, lambda requirements: None, root)
    return {b.name: b.context.tag for b in builds}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the recipes read, to change one file in."""
    shutil.copytree(REPO_ROOT / "services", tmp_path / "services", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def test_the_registration_bundle_builds_six_images() -> None:
    assert list(tags()) == ["runtime", "app", "redis", "rabbitmq", "postgres", "prometheus"]


def test_tags_are_stable_for_the_same_inputs(tree: Path) -> None:
    assert tags(tree) == tags(REPO_ROOT)


def test_a_change_to_one_services_code_rebuilds_the_app_image_only(tree: Path) -> None:
    before = tags(tree)
    path = tree / "services/registration/otp/rules.py"
    path.write_text(path.read_text() + "\n# changed\n")
    assert changed(before, tags(tree)) == {"app"}


def test_a_change_to_the_pinned_requirements_rebuilds_the_runtime_and_what_builds_from_it(tree: Path) -> None:
    before = tags(tree)
    path = tree / "services/requirements.txt"
    path.write_text(path.read_text() + "# changed\n")
    assert changed(before, tags(tree)) == {"runtime", "app"}


def test_a_change_to_one_server_image_rebuilds_it_alone(tree: Path) -> None:
    before = tags(tree)
    path = tree / "services/images/redis/entrypoint.sh"
    path.write_text(path.read_text() + "\n# changed\n")
    assert changed(before, tags(tree)) == {"redis"}


def test_another_base_image_rebuilds_everything() -> None:
    assert changed(tags(), tags(base="swarmlab/debian:bookworm-2")) == set(tags())


def builds() -> list[Build]:
    return workload_builds(SPECS, "swarmlab/debian:bookworm-1", REGISTRY, lambda requirements: None)


def test_missing_images_build_at_once_and_an_image_after_its_base() -> None:
    plan = plan_builds("storage-1", builds(), present=set())
    groups = [op for op in plan.operations if isinstance(op, Parallel | Run) and "docker build" in str(op)]
    first, second = groups
    assert isinstance(first, Parallel)
    assert sorted(r.why.split()[3].split(":")[0] for r in first.runs) == [
        "postgres",
        "prometheus",
        "rabbitmq",
        "redis",
        "runtime",
    ]
    assert isinstance(second, Run) and "/swarmlab/app:" in second.command
    assert all(r.node == "storage-1" for r in plan.runs)


def test_a_registry_that_has_everything_builds_nothing() -> None:
    everything = builds()
    answer = "\n".join(f"{b.key} yes" for b in everything)
    assert parse_registry_check(answer) == {b.key for b in everything}
    plan = plan_builds("storage-1", everything, parse_registry_check(answer))
    assert plan.operations == () and not plan.changes and len(plan.notes) == len(everything)
    command = registry_check_command(everything, "10.20.0.6:5000")
    assert all(b.key in command for b in everything)
    # Over TLS, verified with the CA the engines trust for this registry: no plain HTTP, no -k.
    assert "https://10.20.0.6:5000/v2/" in command and "--cacert /etc/docker/certs.d/10.20.0.6:5000/ca.crt" in command
    assert "http://" not in command and " -k" not in command


def test_only_the_changed_image_is_rebuilt_when_the_rest_is_in_the_registry() -> None:
    everything = builds()
    present = {b.key for b in everything if b.name != "app"}
    plan = plan_builds("storage-1", everything, present)
    built = [r for r in plan.runs if "docker build" in r.command]
    assert len(built) == 1 and "/swarmlab/app:" in built[0].command
