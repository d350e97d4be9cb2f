"""The tasks end to end with a fake runner (no SSH): facts in, the commands they run out, dry runs
that change nothing, and the same reporting for every task."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cluster import flows
from cluster.errors import HostsFailed, SwarmlabError
from cluster.inventory import Node
from cluster.plans.stack import choose_storage_mode
from cluster.runners import Result
from cluster.tasks.haproxy import configure_haproxy
from cluster.tasks.swarm import swarm_join
from cluster.workload import load_workload
from tests.unit.fake_runner import Call, FakeRunner, answer_as_written
from tests.unit.fake_runner import fake_session as session
from tests.unit.fake_runner import lab_shaped_inventory as inventory
from tests.unit.recorded import recorded

INACTIVE = recorded("swarm_inactive")
MANAGER = recorded("swarm_manager")
NODE_LS = recorded("node_ls")
WORKER_TOKEN = "SWMTKN-1-worker-token-never-to-be-seen"
MANAGER_TOKEN = "SWMTKN-1-manager-token-never-to-be-seen"


def fresh_cluster() -> FakeRunner:
    """Engines that are in no swarm yet; once `swarm init` is asked, manager-1 is a manager."""
    runner = FakeRunner(inventory())
    runner.answer(r"docker info --format '\{\{json .Swarm\}\}'", INACTIVE)
    runner.answer(r"docker node ls", NODE_LS)
    runner.answer(r"join-token -q worker", WORKER_TOKEN)
    runner.answer(r"join-token -q manager", MANAGER_TOKEN)
    runner.answer(r"docker node ps", "")
    runner.answer(r"echo ready", "ready")
    runner.answer(r"sha256sum", "config_sha=\nsystemd=no\nrunning=no\n")
    return runner


def test_bootstrap_of_a_fresh_cluster_runs_init_joins_drain_haproxy_and_nfs(tmp_path: Path) -> None:
    runner = fresh_cluster()
    booted = flows.run(flows.BOOTSTRAP, session(runner, tmp_path))
    assert booted.the_leader().name == "manager-1"
    [init] = [c for c in runner.calls if "swarm init" in c.command]
    assert init.node == "manager-1" and "--advertise-addr 10.20.0.11" in init.command
    joins = [c for c in runner.calls if "swarm/join" in c.command]
    assert sorted(c.node for c in joins) == ["manager-2", "manager-3", "worker-1", "worker-2", "worker-3"]
    # Tokens reach the joining node on stdin only: never on a command line.
    assert {c.stdin for c in joins if c.node.startswith("worker")} == {WORKER_TOKEN}
    assert {c.stdin for c in joins if c.node.startswith("manager")} == {MANAGER_TOKEN}
    assert not any(WORKER_TOKEN in c.command or MANAGER_TOKEN in c.command for c in runner.calls)
    assert ("lb-1", "/etc/haproxy/haproxy.cfg.new") in runner.files
    assert ("storage-1", "/etc/ganesha/ganesha.conf.new") in runner.files
    assert [p.name for p in booted.timings.phases] == [
        "unlock",
        "swarm-init",
        "swarm-join",
        "autolock",
        "drain-managers",
        "haproxy",
        "nfs",
        "registry",
        "isolation",
    ]
    assert booted.timings.changed
    # Every engine (not the lb node) gets the isolation script and runs it: its chain holds no rule yet.
    engines = ["manager-1", "manager-2", "manager-3", "storage-1", "worker-1", "worker-2", "worker-3"]
    assert sorted(n for n, path in runner.files if path == "/usr/local/sbin/swarmlab-isolate") == engines
    assert sorted(c.node for c in runner.calls if c.command == "/usr/local/sbin/swarmlab-isolate") == engines


def test_dry_run_bootstrap_reads_facts_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = fresh_cluster()
    runner.answer(r"docker node ls", "", exit_code=1)  # no swarm exists yet to list
    dry = flows.run(flows.BOOTSTRAP, session(runner, tmp_path, dry_run=True)).timings
    changing = ("swarm init", "swarm/join", "join-token", "node update", "mv ", "haproxy -W", "ganesha.nfsd")
    assert not [c for c in runner.calls if any(word in c.command for word in changing)]
    assert runner.files == {}
    out = capsys.readouterr().out
    assert "would change on manager-1: swarm initialised" in out
    assert "would write /etc/haproxy/haproxy.cfg.new on lb-1" in out
    assert dry.would_change and not dry.changed
    assert {p.outcome for p in dry.phases} <= {"would change", "no change"}


def test_join_on_a_joined_cluster_changes_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = fresh_cluster()
    listed = [json.loads(line) for line in NODE_LS.splitlines()]
    for row in listed:
        info = json.loads(MANAGER) | {"NodeID": row["ID"], "ControlAvailable": row.get("ManagerStatus", "") != ""}
        runner.answer(r"docker info", json.dumps(info), node=row["Hostname"])
    joined = session(runner, tmp_path)
    swarm_join(joined, inventory().node("manager-1"))
    assert not runner.commands("swarm/join|join-token|promote|demote")
    assert "every node is already a member with the right role" in capsys.readouterr().out
    assert not joined.timings.changed


def test_a_failure_on_several_workers_names_each_of_them(tmp_path: Path) -> None:
    runner = fresh_cluster()
    runner.answer(r"swarm/join", "Error response from daemon: timeout", exit_code=1, node="worker-[23]")
    with pytest.raises(HostsFailed) as caught:
        swarm_join(session(runner, tmp_path), inventory().node("manager-1"))
    text = str(caught.value)
    assert "worker-2" in text and "worker-3" in text and "worker-1" not in text
    assert WORKER_TOKEN not in text and "timeout" in text


def deployed_hello() -> FakeRunner:
    runner = fresh_cluster()
    runner.answer(r"docker info", MANAGER, node="manager-1")
    runner.answer(r"uname -m", "x86_64")
    runner.answer(r"docker image inspect", "yes")
    runner.answer(r"docker stack ls", "registration\n")
    return runner


def test_deploying_a_second_bundle_builds_deploys_and_routes_it_next_to_the_first(tmp_path: Path) -> None:
    runner = deployed_hello()
    runner.answer(r"docker stack services hello", "hello_web|3/3\n---\nhello_web|\n---\n")
    hello = load_workload("hello", "lab")
    flows.run(flows.DEPLOY_STACK, session(runner, tmp_path), hello)
    [build] = runner.commands(r"docker build")
    assert "/swarmlab/hello:" in build and "docker push -q 127.0.0.1:5001/swarmlab/hello:" in build
    assert runner.commands(r"docker stack deploy --prune -c /root/.swarmlab/stacks/hello.yml hello")
    stack = runner.files[("manager-1", "/root/.swarmlab/stacks/hello.yml")].decode()
    # Pulled from the public endpoint, pinned by the digest the registry gave for the pushed tag.
    [(key, digest)] = runner.registry.items()
    assert f"image: 10.20.0.6:5000/swarmlab/{key}@{digest}\n" in stack
    assert "published: 8090" in stack
    haproxy_cfg = runner.files[("lb-1", "/etc/haproxy/haproxy.cfg.new")].decode()
    # Both the deployed registration stack and hello are served.
    assert "use_backend hello if { path_beg /hello/ }" in haproxy_cfg and "default_backend ui" in haproxy_cfg
    assert "no secret" not in stack and not runner.commands("docker secret create")


def hello_as_deployed(tmp_path: Path, update_state: str) -> FakeRunner:
    """A cluster as a first deploy of hello left it: the registry has its image, the manager its stack
    file, every other file the deploy wrote is in place (haproxy.cfg, the registry's, the
    certificates), and `docker stack services` answers hello_web with this update state."""
    runner = deployed_hello()
    first = FakeRunner(runner.inventory, list(runner.answers))
    first.answer(r"docker stack services hello", "hello_web|3/3\n---\nhello_web|\n---\n")
    flows.run(flows.DEPLOY_STACK, session(first, tmp_path), load_workload("hello", "lab"))
    stack = first.files[("manager-1", "/root/.swarmlab/stacks/hello.yml")].decode()
    runner.registry = dict(first.registry)  # what the first deploy pushed
    runner.answer(r"cat /root/.swarmlab/stacks/hello.yml", stack)
    runner.answer(r"docker stack services hello", f"hello_web|3/3\n---\nhello_web|{update_state}\n---\n")
    answer_as_written(runner, first.files)
    return runner


def test_a_second_deploy_of_a_current_bundle_changes_nothing(tmp_path: Path) -> None:
    runner = hello_as_deployed(tmp_path, "completed")
    again = flows.run(flows.DEPLOY_STACK, session(runner, tmp_path), load_workload("hello", "lab"))
    assert not runner.commands(r"docker build|stack deploy|secret (create|rm)")
    assert not runner.files and not again.timings.changed


def test_a_stack_removed_by_hand_is_deployed_again_not_waited_for(tmp_path: Path) -> None:
    """`docker stack rm` leaves the stored stack file as it was: equal to the rendered one, the stack
    still has to be deployed (waiting would time out on services that do not exist)."""
    # Removed by hand: no service until the deploy runs again.
    runner = _AnswersEmptyUntil(hello_as_deployed(tmp_path, ""), r"docker stack services hello", r"stack deploy")
    flows.run(flows.DEPLOY_STACK, session(runner, tmp_path), load_workload("hello", "lab"))
    assert runner.commands(r"docker stack deploy --prune -c /root/.swarmlab/stacks/hello.yml hello")


class _AnswersEmptyUntil(FakeRunner):
    """A runner answering `pattern` with nothing until a command matching `until` has run."""

    def __init__(self, runner: FakeRunner, pattern: str, until: str) -> None:
        super().__init__(runner.inventory, list(runner.answers))
        self.pattern, self.until = pattern, until

    def run(self, node: Node, command: str, **kwargs: Any) -> Result:
        if re.search(self.pattern, command) and not self.commands(self.until):
            self.calls.append(Call(node.name, command, None))
            return Result(node.name, command, "", "", 0)
        return super().run(node, command, **kwargs)


def test_two_bundles_claiming_one_route_are_refused(tmp_path: Path) -> None:
    runner = deployed_hello()
    hello = load_workload("hello", "lab")
    clash = type(hello)(
        hello.manifest.model_copy(update={"name": "other"}), hello.directory, hello.environment, hello.values
    )
    configure_haproxy(session(runner, tmp_path), inventory().node("manager-1"), also=clash)  # hello is not deployed
    runner.answer(r"docker stack ls", "registration\nhello\n")
    with pytest.raises(SwarmlabError, match="stacks hello and other both claim route path /hello/"):
        configure_haproxy(session(runner, tmp_path), inventory().node("manager-1"), also=clash)


@pytest.mark.parametrize(
    ("wanted", "nfs", "shared", "mode"),
    [
        ("auto", [True, True], [False, False], "nfs"),
        ("auto", [True, False], [True, True], "shared-dir"),
        ("nfs", [False, False], [True, True], "nfs"),
        ("shared-dir", [True, True], [False, False], "shared-dir"),
    ],
)
def test_storage_mode_follows_what_the_workers_have(
    wanted: str, nfs: list[bool], shared: list[bool], mode: str
) -> None:
    names = ["worker-1", "worker-2"]
    assert (
        choose_storage_mode(wanted, dict(zip(names, nfs, strict=True)), dict(zip(names, shared, strict=True))) == mode
    )


def test_no_nfs_client_and_no_shared_export_names_the_workers() -> None:
    with pytest.raises(SwarmlabError, match="worker-2; install nfs-common"):
        choose_storage_mode("auto", {"worker-1": True, "worker-2": False}, {"worker-1": False, "worker-2": False})


def test_the_demo_flow_runs_each_phase_once_and_builds_the_map_with_the_stack(tmp_path: Path) -> None:
    runner = fresh_cluster()
    runner.answer(r"uname -m", "x86_64")
    runner.answer(r"docker image inspect", "yes")
    runner.answer(r"docker stack services hello", "hello_web|3/3\n---\nhello_web|\n---\n")
    done = flows.run(flows.DEMO, session(runner, tmp_path), load_workload("hello", "lab"))
    phases = [p.name for p in done.timings.phases]
    assert phases == [
        "unlock",
        "swarm-init",
        "swarm-join",
        "autolock",
        "drain-managers",
        "haproxy",
        "nfs",
        "registry",
        "isolation",
        "build-images",
        "stack-inputs",
        "deploy-stack",
        "prune-secrets",
        "cluster-map",
    ]
    builds = runner.commands(r"docker build")
    assert len(builds) == 2 and sum("/swarmlab/hello:" in b for b in builds) == 1
    assert sum("/swarmlab/clustermap:" in b for b in builds) == 1, "the map's image in the same build-images phase"
    assert runner.commands(r"docker stack deploy --prune -c /root/.swarmlab/stacks/hello.yml hello")
    runs = [c for c in runner.calls if "docker run -d --name swarmlab-map" in c.command]
    assert sorted(c.node for c in runs) == ["manager-1", "manager-2", "manager-3"]
    assert all(done.map_image in c.command for c in runs)
    assert done.the_deployed().storage_mode == ""
