"""Image recipes and cache keys: a change to one file rebuilds the images that hold it (and what builds
FROM them) and nothing else; tags do not depend on the cluster; independent images build at once; a
registry that has everything builds nothing; an image the machine's cache has is copied, not built;
pushes and copies go to the registry's loopback endpoint, and the stack gets references pinned by digest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cluster.errors import SwarmlabError
from cluster.facts.storage import RegistryCheck, parse_registry_check, registry_check
from cluster.images import Build, workload_builds
from cluster.operations import Parallel, Run
from cluster.plans.images import ImageCache, pinned_refs, plan_builds, push_ref, to_build
from cluster.workload import REPO_ROOT, load_workload

REGISTRY = "10.20.0.6:5000"
PUSH = "127.0.0.1:5001"  # the registry's writable endpoint, on the storage node's loopback
SPECS = load_workload("registration", "lab").manifest.images


def tags(root: Path = REPO_ROOT, base: str = "swarmlab/debian:bookworm-1", registry: str = REGISTRY) -> dict[str, str]:
    builds = workload_builds(SPECS, base, registry, lambda requirements: None, root)
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


def test_tags_are_the_same_in_every_cluster_and_the_registry_is_passed_apart() -> None:
    """The machine's image cache serves every lab only if a cluster's registry address is not an input."""
    assert tags(registry="10.30.0.6:5000") == tags()
    app = next(b for b in builds("10.30.0.6:5000") if b.name == "app")
    assert app.ref.startswith("10.30.0.6:5000/swarmlab/app:")
    assert app.context.all_args["REGISTRY"] == "10.30.0.6:5000"
    assert app.context.build_args["RUNTIME_IMAGE"] == f"swarmlab/runtime:{tags()['runtime']}"


def builds(registry: str = REGISTRY) -> list[Build]:
    return workload_builds(SPECS, "swarmlab/debian:bookworm-1", registry, lambda requirements: None)


NOTHING = RegistryCheck(frozenset(), frozenset())
CACHE = ImageCache("/var/cache/swarmlab/images")


def test_missing_images_build_at_once_and_an_image_after_its_base() -> None:
    plan = plan_builds("storage-1", builds(), NOTHING)
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


def digest_of(build: Build) -> str:
    return "sha256:" + (build.context.tag * 6)[:64]


def test_a_registry_that_has_everything_builds_nothing() -> None:
    everything = builds()
    answer = "\n".join(f"{b.key} yes yes {digest_of(b)}" for b in everything)
    keys = frozenset(b.key for b in everything)
    check = parse_registry_check(answer)
    assert check == RegistryCheck(keys, keys, {b.key: digest_of(b) for b in everything})
    plan = plan_builds("storage-1", everything, check, CACHE)
    assert plan.operations == () and not plan.changes and len(plan.notes) == len(everything)
    command = registry_check(everything).command
    assert all(b.key in command for b in everything)
    # Asked on the writable endpoint, on the storage node's loopback: a HEAD that accepts the manifest
    # types an image is pushed as (else distribution answers another form, with another digest).
    assert "curl -sfI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json, " in command
    assert "application/vnd.oci.image.manifest.v1+json" in command
    assert f"http://{PUSH}/v2/swarmlab/$name/manifests/$tag" in command and "docker-content-digest:" in command
    assert REGISTRY not in command and " -k" not in command


def test_the_stack_pulls_from_the_public_endpoint_pinned_by_digest() -> None:
    everything = builds()
    check = parse_registry_check("\n".join(f"{b.key} yes no {digest_of(b)}" for b in everything))
    refs = pinned_refs(everything, check)
    app = next(b for b in everything if b.name == "app")
    assert refs["app"] == f"{REGISTRY}/swarmlab/app:{app.context.tag}@{digest_of(app)}"
    assert all(ref.startswith(f"{REGISTRY}/swarmlab/") and "@sha256:" in ref for ref in refs.values())
    # A tag the registry lacks after the builds is an error, not a reference by tag...
    without_app = parse_registry_check("\n".join(f"{b.key} yes no {digest_of(b)}" for b in everything if b is not app))
    with pytest.raises(SwarmlabError, match=rf"no manifest digest for app:{app.context.tag}"):
        pinned_refs(everything, without_app)
    # ...except in a dry run, which built nothing: it goes by tag.
    assert pinned_refs(everything, without_app, dry_run=True)["app"] == app.ref
    # An answer without a digest (or a malformed one) pins nothing.
    assert parse_registry_check(f"{app.key} yes no -").digests == {}
    assert parse_registry_check(f"{app.key} yes no md5:abc").digests == {}


def test_only_the_changed_image_is_rebuilt_when_the_rest_is_in_the_registry() -> None:
    everything = builds()
    present = frozenset(b.key for b in everything if b.name != "app")
    plan = plan_builds("storage-1", everything, RegistryCheck(present, frozenset()))
    built = [r for r in plan.runs if "docker build" in r.command]
    assert len(built) == 1 and "/swarmlab/app:" in built[0].command
    assert "skopeo" not in built[0].command, "no cache, nothing kept"
    # Built and pushed through the loopback endpoint; the build pulls its base from the public one.
    app = next(b for b in everything if b.name == "app")
    assert push_ref(app) == f"{PUSH}/swarmlab/app:{app.context.tag}"
    assert f"docker build -q -t {push_ref(app)} " in built[0].command
    assert f"docker push -q {push_ref(app)};" in built[0].command and f"push -q {REGISTRY}" not in built[0].command


def test_an_empty_registry_is_filled_from_the_image_cache_and_only_what_it_lacks_is_built() -> None:
    everything = builds()
    app = next(b for b in everything if b.name == "app")
    command = registry_check(everything, CACHE.path).command
    assert '[ -f "/var/cache/swarmlab/images/$name-$tag/manifest.json" ]' in command
    answer = "\n".join(f"{b.key} no {'no' if b is app else 'yes'}" for b in everything)
    check = parse_registry_check(answer)
    assert check.cached == frozenset(b.key for b in everything if b is not app) and not check.present
    assert to_build(everything, check) == [app]
    plan = plan_builds("storage-1", everything, check, CACHE)
    copies = [r for r in plan.runs if r.command.startswith("skopeo copy")]
    assert len(copies) == 5 and all(r.why.startswith("copied ") for r in copies)
    runtime = next(b for b in everything if b.name == "runtime")
    copy = next(r.command for r in copies if "/runtime-" in r.command)
    assert f"--dest-tls-verify=false dir:/var/cache/swarmlab/images/runtime-{runtime.context.tag} " in copy
    assert copy.endswith(f" docker://{PUSH}/swarmlab/runtime:{runtime.context.tag}")
    (build,) = [r for r in plan.runs if "docker build" in r.command]
    assert "/swarmlab/app:" in build.command and f"--build-arg REGISTRY={REGISTRY}" in build.command
    # The app builds FROM the runtime: the runtime reaches the registry (from the cache) first.
    order = list(plan.runs)
    assert order.index(next(r for r in copies if "/runtime-" in r.command)) < order.index(build)
    # What it builds, it keeps in the cache, under a scratch name renamed into place when complete.
    entry = f"/var/cache/swarmlab/images/app-{app.context.tag}"
    assert f"--src-tls-verify=false docker://{push_ref(app)} dir:{entry}.partial-$$" in build.command
    assert f"mv -T {entry}.partial-$$ {entry}" in build.command


def test_an_image_the_registry_has_and_the_cache_lacks_is_kept_in_the_cache_not_built() -> None:
    everything = builds()
    keys = frozenset(b.key for b in everything)
    redis = next(b for b in everything if b.name == "redis")
    plan = plan_builds("storage-1", everything, RegistryCheck(keys, keys - {redis.key}), CACHE)
    (keep,) = plan.runs
    assert keep.why == f"kept {redis.key} in the image cache" and "docker build" not in keep.command
    assert (
        f"docker://{push_ref(redis)} dir:/var/cache/swarmlab/images/redis-{redis.context.tag}.partial-$$"
        in keep.command
    )


def test_without_a_cache_nothing_is_cached_or_kept() -> None:
    command = registry_check(builds()).command
    assert "manifest.json" not in command and "then c=yes" in command and "if false;" in command
    everything = builds()
    plan = plan_builds("storage-1", everything, RegistryCheck(frozenset(), frozenset()))
    assert not any("skopeo" in r.command for r in plan.runs)
