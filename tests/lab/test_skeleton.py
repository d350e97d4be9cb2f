"""The walking skeleton on a real lab: Raft managers, drained managers, HAProxy over the workers,
idempotent bootstrap, pinned host keys, secrets kept off disk and out of the output."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import docker
import httpx
import pytest

from cluster.errors import CommandFailed
from cluster.facts import read
from cluster.facts.swarm import NODE_LIST, running_on
from cluster.inventory import Role
from cluster.lab.keys import new_key_pair
from cluster.runners import SshRunner
from tests.lab.conftest import LAB_ENV, LOG, Lab, container_of, fab

pytestmark = pytest.mark.lab


def test_three_raft_managers_one_leader_two_reachable(lab: Lab) -> None:
    listed = read(lab.nodes, lab.inventory.managers[0], NODE_LIST)
    managers = [m for m in listed if m.is_manager]
    assert sorted(m.manager_status for m in managers) == ["leader", "reachable", "reachable"]
    assert {m.hostname for m in managers} == {"manager-1", "manager-2", "manager-3"}
    workers = [m for m in listed if not m.is_manager]
    assert {(m.hostname, m.availability, m.state) for m in workers} == {
        (f"worker-{i}", "active", "ready") for i in (1, 2, 3)
    }


def test_every_manager_is_drained_and_runs_no_task(lab: Lab) -> None:
    manager = lab.inventory.managers[0]
    listed = read(lab.nodes, manager, NODE_LIST)
    assert {m.availability for m in listed if m.is_manager} == {"drain"}
    ids = [m.node_id for m in listed if m.is_manager]
    assert read(lab.nodes, manager, running_on(ids)) == ()


def test_page_answers_through_haproxy_from_several_containers(lab: Lab) -> None:
    served_by = set()
    with httpx.Client(timeout=5, verify=lab.tls) as client:
        for _ in range(12):
            response = client.get(lab.url + "/")
            assert response.status_code == 200
            served_by.add(container_of(response))
    assert len(served_by) >= 2, f"HAProxy sent every request to {served_by}"


def test_second_bootstrap_and_deploy_change_nothing(lab: Lab) -> None:
    for task in ("bootstrap", "deploy-stack"):
        out = fab(task).stdout
        assert "result: no change" in out
        assert "changed:" not in out


def test_only_the_lb_node_is_published_and_only_on_loopback(lab: Lab) -> None:
    engine = docker.from_env()
    containers = engine.containers.list(filters={"label": f"swarmlab.cluster={LAB_ENV['SWARMLAB_CLUSTER']}"})
    assert len(containers) == 8
    for container in containers:
        bindings = {k: v for k, v in (container.attrs["HostConfig"]["PortBindings"] or {}).items() if v}
        if container.labels["swarmlab.role"] == "lb":
            assert {b["HostIp"] for v in bindings.values() for b in v} == {"127.0.0.1"}
            assert len(bindings) == 4  # HTTP (redirect only), HTTPS, SSH, stats
        else:
            assert bindings == {}, f"{container.name} publishes {bindings}"


def test_host_keys_are_pinned(lab: Lab, tmp_path: Path) -> None:
    known = Path(lab.inventory.ssh.known_hosts or "").read_text().splitlines()
    impostor = new_key_pair("impostor").public_openssh.split()[1]
    forged = [f"{line.rsplit(' ', 1)[0]} {impostor}" if line.startswith("[127.0.0.1]") else line for line in known]
    (tmp_path / "known_hosts").write_text("\n".join(forged) + "\n")
    ssh = lab.inventory.ssh.model_copy(update={"known_hosts": str(tmp_path / "known_hosts")})
    nodes = SshRunner(lab.inventory.model_copy(update={"ssh": ssh}))
    try:
        with pytest.raises(CommandFailed):
            nodes.run(lab.inventory.lb, "true")
    finally:
        nodes.close()


def test_join_tokens_are_never_printed_or_written(lab: Lab) -> None:
    manager = lab.inventory.managers[0]
    tokens = [lab.nodes.run(manager, f"docker swarm join-token -q {r}").stdout.strip() for r in ("worker", "manager")]
    assert all(t.startswith("SWMTKN-") for t in tokens)
    for output in LOG.outputs:
        for token in tokens:
            assert token not in output
    state = lab.state.root
    for path in state.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(t in text for t in tokens), f"a join token is in {path}"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "id_ed25519").stat().st_mode & 0o777) == "0o600"


def test_haproxy_reload_drops_no_request(lab: Lab) -> None:
    """Change the config on the lb node, then `fab haproxy` validates, swaps and reloads under load."""
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        # A new connection per request: the property is that no connection is refused or dropped.
        # (An idle keep-alive connection that the old worker closes can race with a client's next
        # request on it; browsers retry those, and HTTP/1.1 allows no better.)
        with httpx.Client(timeout=5, headers={"Connection": "close"}, verify=lab.tls) as client:
            deadline = time.monotonic() + 30  # bounded, loopback only
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    results.append(client.get(lab.url + "/").status_code)
                except httpx.HTTPError:
                    results.append(0)

    lab.nodes.run(lab.inventory.lb, "echo '# drift' >> /etc/haproxy/haproxy.cfg")
    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(1)
    out = fab("haproxy").stdout
    time.sleep(1)
    stop.set()
    thread.join()
    assert "HAProxy reloaded" in out
    assert len(results) > 20
    assert set(results) == {200}, f"{results.count(0)} connection errors, statuses {set(results)}"


def test_status_shows_nodes_and_services(lab: Lab) -> None:
    out = fab("status").stdout
    for name in ("manager-1", "manager-2", "manager-3", "worker-1", "worker-2", "worker-3"):
        assert name in out
    assert "Leader" in out and "Drain" in out
    assert "3/3" in out


def test_dry_run_shows_no_difference_when_nothing_changed(lab: Lab) -> None:
    out = fab("deploy-stack", "--dry-run").stdout
    assert "services:" in out and "no difference from what is deployed" in out


def test_bad_config_is_refused_before_anything_is_made(lab: Lab) -> None:
    done = fab("lab-up", env={"SWARMLAB_CLUSTER": "citbad", "SWARMLAB_MANAGERS": "4"}, check=False)
    assert done.returncode != 0
    assert "managers=4" in done.stderr and "Fix:" in done.stderr
    engine = docker.from_env()
    assert engine.containers.list(all=True, filters={"label": "swarmlab.cluster=citbad"}) == []
    assert engine.networks.list(filters={"label": "swarmlab.cluster=citbad"}) == []


def test_lab_of_another_shape_is_refused_and_left_alone(lab: Lab) -> None:
    done = fab("lab-up", env={"SWARMLAB_WORKERS": "2"}, check=False)
    assert done.returncode != 0
    assert "already up with shape" in done.stderr and "lab-down" in done.stderr
    engine = docker.from_env()
    assert len(engine.containers.list(filters={"label": "swarmlab.cluster=citest"})) == 8


def test_unreachable_node_is_named_with_the_failed_command(lab: Lab) -> None:
    engine = docker.from_env()
    worker = engine.containers.get(f"swarmlab-{LAB_ENV['SWARMLAB_CLUSTER']}-worker-3")  # this lab's, never CI's
    worker.stop(timeout=2)
    try:
        done = fab("bootstrap", check=False)
        assert done.returncode != 0
        assert "worker-3" in done.stderr and "docker info" in done.stderr
    finally:
        fab("lab-up")  # starts stopped nodes of an existing lab and waits for them
    out = fab("bootstrap").stdout
    assert "swarm-join" in out
    listed = read(lab.nodes, lab.inventory.managers[0], NODE_LIST)
    assert {m.state for m in listed} == {"ready"}


def test_failed_lab_up_removes_what_it_made(lab: Lab) -> None:
    """A container squatting a node's name makes lab-up fail midway; it must clean up after itself."""
    engine = docker.from_env()
    image = lab_image(engine)
    squatter = engine.containers.create(image, name="swarmlab-citfail-worker-1", command="true")
    env = {
        "SWARMLAB_CLUSTER": "citfail",
        "SWARMLAB_CIDR": "10.31.0.0/24",
        "SWARMLAB_HTTP_PORT": "28080",
        "SWARMLAB_HTTPS_PORT": "28443",
        "SWARMLAB_SSH_PORT": "22222",
        "SWARMLAB_STATS_PORT": "28404",
        "SWARMLAB_WORKERS": "1",
        "SWARMLAB_MANAGERS": "1",
    }
    try:
        done = fab("lab-up", env=env, check=False)
        assert done.returncode != 0 and "removing what it made" in done.stdout
        selector: dict[str, str | list[str] | bool] = {"label": "swarmlab.cluster=citfail"}
        assert engine.containers.list(all=True, filters=selector) == []
        assert engine.networks.list(filters=selector) == []
        assert engine.volumes.list(filters=selector) == []
    finally:
        squatter.remove(force=True)


def lab_image(engine: docker.DockerClient) -> str:
    image = engine.containers.get(f"swarmlab-{LAB_ENV['SWARMLAB_CLUSTER']}-lb-1").image
    assert image is not None
    return str(image.tags[0])


def test_inventory_is_schema_v1(lab: Lab) -> None:
    assert lab.inventory.version == 1 and lab.inventory.provider == "lab"
    assert [n.role for n in lab.inventory.nodes].count(Role.MANAGER) == 3
    assert os.path.exists(lab.inventory.ssh.private_key)
