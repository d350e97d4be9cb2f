"""Nodes that boot like cloud VMs, driven through the Pulumi provider's code (`make rehearsal-test`)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import paramiko
import pytest

from cluster.inventory import Node, Role
from cluster.lab.rehearsal.provider import NAME
from cluster.runners import SshRunner
from tests.rehearsal.conftest import Rehearsal, fab

pytestmark = pytest.mark.lab

UNITS = {
    Role.LB: ("ssh", "haproxy"),
    Role.STORAGE: ("ssh", "docker", "nfs-ganesha", "docker-registry"),
    Role.MANAGER: ("ssh", "docker"),
    Role.WORKER: ("ssh", "docker"),
}


def test_pid_1_is_systemd_on_every_node(rehearsal: Rehearsal) -> None:
    found = rehearsal.nodes.each(
        rehearsal.inventory.nodes, lambda n: rehearsal.nodes.run(n, "cat /proc/1/comm").stdout.strip(), "pid 1"
    )
    assert set(found.values()) == {"systemd"}, found


def test_cloud_init_is_done_without_error_on_every_node(rehearsal: Rehearsal) -> None:
    def verdict(node: Node) -> tuple[str, list[str]]:
        status = rehearsal.nodes.run(node, "cloud-init status", check=False).stdout.strip()
        result = json.loads(rehearsal.nodes.run(node, "cat /run/cloud-init/result.json").stdout)
        return status, result["v1"]["errors"]

    found = rehearsal.nodes.each(rehearsal.inventory.nodes, verdict, "cloud-init")
    assert all(v == ("status: done", []) for v in found.values()), found


def test_the_units_of_every_role_are_active_and_enabled(rehearsal: Rehearsal) -> None:
    def states(node: Node) -> str:
        units = " ".join(UNITS[node.role])
        return rehearsal.nodes.run(node, f"systemctl is-active {units}; systemctl is-enabled {units}").stdout

    found = rehearsal.nodes.each(rehearsal.inventory.nodes, states, "units")
    for name, output in found.items():
        assert set(output.split()) <= {"active", "enabled"}, f"{name}: {output}"


def test_sshd_offers_only_the_pinned_key(rehearsal: Rehearsal) -> None:
    lb = rehearsal.inventory.lb
    address = str(lb.public_ip or lb.private_ip)
    pinned = rehearsal.inventory.ssh.host_keys[lb.name].split()[1]
    for key_type, offered in (("ssh-ed25519", True), ("rsa-sha2-512", False), ("ecdsa-sha2-nistp256", False)):
        with socket.create_connection((address, 22), timeout=10) as sock:
            transport = paramiko.Transport(sock)
            transport.get_security_options().key_types = (key_type,)
            try:
                transport.start_client(timeout=10)
                assert offered, f"sshd offered a {key_type} host key"
                assert transport.get_remote_server_key().get_base64() == pinned
            except paramiko.SSHException:
                assert not offered, f"sshd did not offer its pinned {key_type} key"
            finally:
                transport.close()


def test_a_different_pinned_key_is_refused(rehearsal: Rehearsal) -> None:
    other = rehearsal.inventory.ssh.host_keys["worker-1"]
    lying = rehearsal.inventory.model_copy(
        update={
            "ssh": rehearsal.inventory.ssh.model_copy(
                update={"host_keys": {**rehearsal.inventory.ssh.host_keys, "lb-1": other}}
            )
        }
    )
    runner = SshRunner(lying)
    try:
        with pytest.raises(Exception, match=r"(?i)host key|not found in known_hosts|does not match"):
            runner.run(lying.lb, "true")
    finally:
        runner.close()


def test_haproxy_serves_the_stack_over_https_with_the_cluster_ca(rehearsal: Rehearsal) -> None:
    with httpx.Client(verify=rehearsal.tls, timeout=10) as client:
        answer = client.get(f"{rehearsal.inventory.endpoints.http}/hello/")
    assert answer.status_code == 200


def _wait(check: str, node: Node, rehearsal: Rehearsal, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            result = rehearsal.nodes.run(node, check, check=False)
            last = result.stdout + result.stderr
            if result.ok:
                return last
        except Exception as error:  # the node is rebooting: its SSH comes back later
            last = str(error)
            rehearsal.nodes.forget(node)
        time.sleep(3)
    raise AssertionError(f"{node.name}: `{check}` did not succeed within {timeout:.0f}s: {last[-500:]}")


@pytest.mark.parametrize("name", ["worker-1", "storage-1"])
def test_a_rebooted_node_comes_back_converged_with_no_task_run(rehearsal: Rehearsal, name: str) -> None:
    node = rehearsal.inventory.node(name)
    rehearsal.container(name).restart(timeout=30)
    units = " ".join(UNITS[node.role])
    _wait(f"systemctl is-active {units}", node, rehearsal)
    manager = rehearsal.inventory.managers[0]
    if node.role is Role.STORAGE:
        _wait("mountpoint -q /srv/swarmlab", node, rehearsal)
        registry = rehearsal.inventory.endpoints.registry
        _wait(f"curl -sf --cacert /etc/docker/certs.d/{registry}/ca.crt https://{registry}/v2/", node, rehearsal)
    else:
        _wait(f"docker node inspect {name} --format '{{{{.Status.State}}}}' | grep -qx ready", manager, rehearsal)
        replicas = "docker service ls --filter name=hello_web --format '{{.Replicas}}'"
        _wait(f"{replicas} | grep -qx 3/3", manager, rehearsal)
    with httpx.Client(verify=rehearsal.tls, timeout=10) as client:
        assert client.get(f"{rehearsal.inventory.endpoints.http}/hello/").status_code == 200


def test_losing_two_managers_then_recover_starts_them_again(rehearsal: Rehearsal) -> None:
    # As the lab's test_losing_two_managers_then_recover, but the stopped servers are started by the
    # provider (a cloud console's "start"), then rejoin through the same recover path.
    lost = ["manager-1", "manager-2"]
    for name in lost:
        rehearsal.container(name).stop(timeout=30)
    try:
        deadline = time.monotonic() + 180  # a leader steps down ~10 s after losing the majority
        while "QUORUM LOST" not in (status := fab("status", "--target", NAME, check=False).stdout):
            assert time.monotonic() < deadline, f"quorum loss not reported:\n{status}"
            time.sleep(5)
        recovered = fab("recover", "--target", NAME).stdout
        assert "swarm re-formed on manager-3" in recovered and "result: changed" in recovered
        for name in lost:
            assert f"started the stopped container of {name}" in recovered
            assert f"{name} joined as manager" in recovered
    finally:
        for name in lost:  # if recover failed, leave no node down
            if rehearsal.container(name).status != "running":
                rehearsal.container(name).start()
        for node in rehearsal.inventory.managers:
            rehearsal.nodes.forget(node)
    replicas = "docker service ls --filter name=hello_web --format '{{.Replicas}}'"
    _wait(f"{replicas} | grep -qx 3/3", rehearsal.inventory.node("manager-3"), rehearsal)
