"""Nodes that boot like cloud VMs, driven through the Pulumi provider's code (`make rehearsal-test`)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import time
import uuid
from pathlib import Path

import httpx
import paramiko
import pytest

from cluster.inventory import Node, Role
from cluster.lab.rehearsal.provider import NAME
from cluster.runners import SshRunner
from tests.rehearsal.conftest import Rehearsal, fab
from topology import EXPORT_DIR

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


def register_student(rehearsal: Rehearsal) -> str:
    """The whole registration flow through HAProxy over HTTPS: the admin's eligible list, the OTP
    request, the mail (the lab values' sink), authentication, registration; the student's e-mail."""
    credentials = json.loads(rehearsal.config.state(provider=NAME).credentials.read_text())
    email = f"rehearsal-{uuid.uuid4().hex[:10]}@example.org"
    base = rehearsal.inventory.endpoints.http
    with httpx.Client(base_url=base, verify=rehearsal.tls, timeout=50) as web:
        api = ("api", str(credentials["api_password"]))
        listed = web.post(
            "/api/create_email_list", json={"email_list": [email]}, auth=("admin", credentials["admin_password"])
        )
        assert listed.status_code == 200, listed.text
        assert web.post("/api/getotp", json={"email": email}, auth=api).status_code == 200
        deadline, mails = time.monotonic() + 60, list[dict[str, str]]()
        while not mails:
            assert time.monotonic() < deadline, f"no OTP mail to {email} within 60 s"
            time.sleep(1)
            mails = web.get("/mail/messages", params={"to": email}).json()
        code = re.search(r"\b(\d{6})\b", mails[-1]["body"])
        assert code, mails[-1]
        verified = web.post("/api/authen", json={"email": email, "otp": code.group(1)}, auth=api)
        assert verified.status_code == 200, verified.text
        body = {"firstname": "Re", "lastname": "Hearsal", "email": email, "proof": verified.json()["proof"]}
        registered = web.post("/api/register", json=body, auth=api)
        assert registered.status_code in (200, 201), registered.text
    return email


def is_registered(rehearsal: Rehearsal, email: str) -> bool:
    """Whether PostgreSQL (wherever its task runs) holds a student of that e-mail."""
    manager = rehearsal.inventory.managers[-1]
    where = "docker service ps registration_postgres --filter desired-state=running --format '{{.Node}}'"
    node = rehearsal.inventory.node(rehearsal.nodes.run(manager, where).stdout.split()[0])
    query = shlex.quote(f"SELECT count(*) FROM student WHERE email = '{email}'")
    psql = f"PGPASSWORD=$(cat /run/secrets/db_password) psql -h 127.0.0.1 -U registration -d registration -tAc {query}"
    container = "$(docker ps -q -f label=com.docker.swarm.service.name=registration_postgres | head -n1)"
    found = rehearsal.nodes.run(node, f"docker exec {container} sh -c {shlex.quote(psql)}").stdout.strip()
    assert found in ("0", "1"), found
    return found == "1"


def test_a_student_registers_over_https_and_the_row_is_on_the_storage_volume(rehearsal: Rehearsal) -> None:
    # The registration stack on systemd nodes, its row in PostgreSQL, whose files are on the storage
    # node's own volume (its Cinder volume here), mounted by UUID from its fstab.
    assert is_registered(rehearsal, register_student(rehearsal))
    storage = rehearsal.inventory.storage
    assert storage is not None
    on_volume = f"findmnt -n -o SOURCE --target {EXPORT_DIR} && ls {EXPORT_DIR}/*/PG_VERSION"
    listed_files = rehearsal.nodes.run(storage, on_volume).stdout
    assert "/dev/" in listed_files and "PG_VERSION" in listed_files, listed_files


def test_a_rolling_update_of_the_api_keeps_it_answering(rehearsal: Rehearsal) -> None:
    done = fab("update", "--target", NAME, "--service", "registration_api", "--force").stdout
    assert "rolling update of registration_api" in done and "result: changed" in done
    assert is_registered(rehearsal, register_student(rehearsal))


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
    # The stopped servers are started by the provider (a cloud console's "start"). Under autolock (the
    # default) the swarm is not re-formed (moby/moby#36852): they boot locked, through systemd, and recover
    # unlocks them with the state directory's key; quorum comes back with their Raft state.
    lost = ["manager-1", "manager-2"]
    for name in lost:
        rehearsal.container(name).stop(timeout=30)
    try:
        deadline = time.monotonic() + 180  # a leader steps down ~10 s after losing the majority
        while "QUORUM LOST" not in (status := fab("status", "--target", NAME, check=False).stdout):
            assert time.monotonic() < deadline, f"quorum loss not reported:\n{status}"
            time.sleep(5)
        assert "`fab recover` unlocks" not in status, "stopped managers do not answer: none is locked yet"
        recovered = fab("recover", "--target", NAME).stdout
        assert "the swarm is autolocked: bringing the managers back instead" in recovered
        assert "force-new-cluster" not in recovered and "result: changed" in recovered
        for name in lost:
            assert f"started the stopped container of {name}" in recovered
            assert f"{name} unlocked (autolock)" in recovered
    finally:
        for name in lost:  # if recover failed, leave no node down
            if rehearsal.container(name).status != "running":
                rehearsal.container(name).start()
        for node in rehearsal.inventory.managers:
            rehearsal.nodes.forget(node)
    replicas = "docker service ls --filter name=hello_web --format '{{.Replicas}}'"
    _wait(f"{replicas} | grep -qx 3/3", rehearsal.inventory.node("manager-3"), rehearsal)


def _converged(rehearsal: Rehearsal, manager: str = "manager-3") -> None:
    """Every swarm node Ready (managers reachable), hello 3/3, and HTTPS answering through HAProxy."""
    at = rehearsal.inventory.node(manager)
    nodes = "docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'"
    expected = len(rehearsal.inventory.managers) + len(rehearsal.inventory.workers)
    _wait(f"test $({nodes} | grep -c ' Ready') -eq {expected}", at, rehearsal)
    managers = len(rehearsal.inventory.managers)
    _wait(f"test $({nodes} | grep -Ec ' (Leader|Reachable)$') -eq {managers}", at, rehearsal)
    # Every service of both stacks runs its replicas ("3/3", "1/1 (max 1 per node)", ...).
    every = "docker service ls --format '{{.Replicas}}' | awk '{split($1, r, \"/\"); if (r[1] != r[2]) bad = 1} END {exit bad}'"
    _wait(every, at, rehearsal, timeout=360)
    with httpx.Client(verify=rehearsal.tls, timeout=10) as client:
        assert client.get(f"{rehearsal.inventory.endpoints.http}/hello/").status_code == 200
        assert client.get(f"{rehearsal.inventory.endpoints.http}/").status_code == 200


def test_maintain_nodes_reboots_a_worker_over_ssh_and_it_comes_back(rehearsal: Rehearsal) -> None:
    # The cloud path's reboot (`systemctl reboot` over SSH, then a new boot id), not the lab's container
    # restart: systemd exits the container, whose restart policy boots it again as a VM would.
    container = rehearsal.container("worker-2")
    restarts = container.attrs["RestartCount"]
    done = fab("maintain-nodes", "--target", NAME, "--nodes", "worker-2", "--reboot").stdout
    for line in ("changed: worker-2 drained", "changed: worker-2 rebooting", "worker-2 booted again"):
        assert line in done, f"no {line!r} in:\n{done[-3000:]}"
    assert "changed: worker-2 active" in done and "result: changed" in done
    container.reload()
    assert container.attrs["RestartCount"] == restarts + 1, "the container was not booted again by its policy"
    rehearsal.nodes.forget(rehearsal.inventory.node("worker-2"))
    _converged(rehearsal)


def test_backup_then_restore_swarm_after_every_manager_lost_its_state_then_the_data(rehearsal: Rehearsal) -> None:
    # backup stops a non-leader manager's engine through systemd (docker.socket and docker.service) and
    # starts it again; restore --swarm stops the chosen manager's engine the same way, swaps the state
    # in, and re-forms the swarm from it. Neither ran on a systemd node before this test.
    kept = register_student(rehearsal)
    taken = fab("backup", "--target", NAME).stdout
    directory = Path(re.findall(r"backup complete: (\S+)", taken)[-1])
    assert "autolock turned off" in taken and "the new unlock key kept in" in taken
    try:
        assert "result: changed" in taken and (directory / "swarm.tar.gz").stat().st_size > 0
        _converged(rehearsal)
        later = register_student(rehearsal)
        for manager in rehearsal.inventory.managers:
            rehearsal.nodes.run(manager, "docker swarm leave --force")
        restored = fab("restore", "--target", NAME, "--swarm", "--from", str(directory)).stdout
        assert re.search(r"swarm state of \S+ in place on manager-\d", restored), restored[-3000:]
        assert "result: changed" in restored and "autolock turned on" in restored, "the backup was taken unlocked"
        active = rehearsal.nodes.each(
            rehearsal.inventory.managers,
            lambda n: rehearsal.nodes.run(n, "systemctl is-active docker").stdout,
            "docker",
        )
        assert {v.strip() for v in active.values()} == {"active"}, active
        _converged(rehearsal)
        # Then the data: the database as it was at the backup (the student registered after it is gone).
        data = fab("restore", "--target", NAME, "--from", str(directory)).stdout
        assert "registration/database restored" in data and "registration/otp-store restored" in data
        assert is_registered(rehearsal, kept) and not is_registered(rehearsal, later)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
