"""The SSH runner against a small SSH server of our own on loopback (paramiko's server side): host keys
are always pinned, a changed or unknown key stops with the host named, an inventory that pins nothing
is refused, and a node that stops answering mid-command fails within the timeout."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
from paramiko.common import AUTH_SUCCESSFUL, OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED, OPEN_SUCCEEDED

from cluster.errors import CommandFailed, SwarmlabError
from cluster.inventory import Inventory
from cluster.lab.keys import KeyPair, known_hosts_line, new_key_pair
from cluster.runners import KEEPALIVE_INTERVAL, KEY_CHANGED, KEY_UNKNOWN, UNREACHABLE, SshRunner, ssh_failed


class _Handler(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED if kind == "session" else OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        CALLS[command] = CALLS.get(command, 0) + 1
        if command.startswith(b"refused-"):  # "refused-N": Swarm's sequence conflict on the first N calls
            conflict = CALLS[command] <= int(command.removeprefix(b"refused-"))
            threading.Thread(
                target=_answer, args=(channel, CONFLICT if conflict else b"ok\n", int(conflict)), daemon=True
            ).start()
        elif command == b"broken":
            threading.Thread(
                target=_answer, args=(channel, b"Error response from daemon: no such node\n", 1), daemon=True
            ).start()
        elif command == b"leak":  # prints a secret, then fails
            threading.Thread(target=_answer, args=(channel, f"token is {LEAKED}\n".encode(), 1), daemon=True).start()
        elif command == b"leak-hang":  # prints a secret, then stops answering
            threading.Thread(target=_leak_then_hang, args=(channel,), daemon=True).start()
        elif command == b"chunks":  # reads stdin to its end; answers how many reads it took, and what
            threading.Thread(target=_count_chunks, args=(channel,), daemon=True).start()
        elif command != b"hang":  # "hang": a node that took the command, then stopped answering
            threading.Thread(target=_answer, args=(channel,), daemon=True).start()
        return True


def _count_chunks(channel: paramiko.Channel) -> None:
    chunks: list[bytes] = []
    while data := channel.recv(1024):
        chunks.append(data)
    channel.sendall(f"{len(chunks)} {b''.join(chunks).decode()}".encode())
    channel.send_exit_status(0)
    channel.close()


def _leak_then_hang(channel: paramiko.Channel) -> None:
    time.sleep(0.05)
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        channel.sendall(f"joining with {LEAKED}\n".encode())


LEAKED = "SWMTKN-1-not-a-real-join-token-0123456789"
CALLS: dict[bytes, int] = {}  # how many times each command was run
CONFLICT = b"Error response from daemon: rpc error: code = Unknown desc = update out of sequence\n"


def _answer(channel: paramiko.Channel, output: bytes = b"ok\n", status: int = 0) -> None:
    # This thread may run before paramiko has replied to the exec request. Output, exit status and EOF
    # may come first (the client keeps them); a close may not (its exec_command fails "Channel closed":
    # what a sleep of 0.05 s here used to lose under load). The client closes the channel when it is done.
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):  # the client may be gone already
        channel.sendall(output)
        channel.send_exit_status(status)
        channel.shutdown_write()


@dataclass
class Server:
    port: int
    host_key: KeyPair


@contextlib.contextmanager
def ssh_server(host_key: KeyPair) -> Iterator[Server]:
    """An SSH server on a loopback port that presents `host_key` and runs _Handler's commands."""
    listener = socket.create_server(("127.0.0.1", 0))
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(client)
            transport.add_server_key(
                paramiko.Ed25519Key.from_private_key(io.StringIO(host_key.private_openssh.decode()))
            )
            transports.append(transport)
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):  # a client that refused our key
                transport.start_server(server=_Handler())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Server(listener.getsockname()[1], host_key)
    finally:
        listener.close()
        for transport in transports:
            transport.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with ssh_server(new_key_pair("test-host")) as running:
        yield running


def inventory(server: Server, tmp_path: Path, known_hosts: str | None, host_keys: dict[str, str]) -> Inventory:
    client_key = tmp_path / "id_ed25519"
    client_key.write_bytes(new_key_pair("client").private_openssh)
    client_key.chmod(0o600)
    return Inventory.model_validate(
        {
            "version": 1,
            "cluster": "unit",
            "provider": "static",
            # No jump host: every node is this one server, reached directly.
            "ssh": {
                "private_key": str(client_key),
                "port": server.port,
                "known_hosts": known_hosts,
                "host_keys": host_keys,
            },
            "network": {"cidr": "127.0.0.0/24"},
            "nodes": [
                {"name": "lb-1", "role": "lb", "private_ip": "127.0.0.1"},
                {"name": "manager-1", "role": "manager", "private_ip": "127.0.0.1"},
                {"name": "worker-1", "role": "worker", "private_ip": "127.0.0.1"},
            ],
            "endpoints": {"http": "https://127.0.0.1"},
        }
    )


def pinned(server: Server, tmp_path: Path, public_key: str) -> SshRunner:
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", server.port, public_key) + "\n")
    return SshRunner(inventory(server, tmp_path, str(known), {}))


def test_the_pinned_key_is_accepted_with_keepalives_on(server: Server, tmp_path: Path) -> None:
    nodes = pinned(server, tmp_path, server.host_key.public_openssh)
    try:
        node = nodes.inventory.node("manager-1")
        assert nodes.run(node, "echo").stdout == "ok\n"
        transport = nodes.connection(node).transport
        assert transport.packetizer._Packetizer__keepalive_interval == KEEPALIVE_INTERVAL
    finally:
        nodes.close()


def test_a_changed_host_key_stops_with_the_host_named(server: Server, tmp_path: Path) -> None:
    nodes = pinned(server, tmp_path, new_key_pair("impostor").public_openssh)
    try:
        with pytest.raises(CommandFailed) as raised:
            nodes.run(nodes.inventory.node("worker-1"), "echo")
        assert raised.value.host == "worker-1"
        assert KEY_CHANGED in str(raised.value)
    finally:
        nodes.close()


def test_every_way_to_a_node_maps_a_failed_connection_the_same_way(server: Server, tmp_path: Path) -> None:
    nodes = pinned(server, tmp_path, new_key_pair("impostor").public_openssh)
    node = nodes.inventory.node("worker-1")
    local = tmp_path / "file"
    local.write_text("x")
    ways: dict[str, Callable[[], object]] = {
        "run": lambda: nodes.run(node, "echo"),
        "stream": lambda: nodes.stream(node, "echo", lambda line: None),
        "write": lambda: nodes.write(node, "/tmp/f", "x"),
        "put": lambda: nodes.put(node, local, "/tmp/f"),
        "get": lambda: nodes.get(node, "/tmp/f", tmp_path / "fetched"),
    }
    try:
        for way, call in ways.items():
            with pytest.raises(CommandFailed) as raised:
                call()
            failed = (raised.value.host, raised.value.exit_code, raised.value.hint)
            assert failed == ("worker-1", None, KEY_CHANGED), way
    finally:
        nodes.close()
    assert not (tmp_path / "fetched").exists(), "a failed get leaves no file behind"


def test_a_failed_connection_names_the_host_and_the_fix() -> None:
    refused = ssh_failed("worker-1", "echo", ConnectionRefusedError(111, "Connection refused"), UNREACHABLE)
    assert str(refused) == (
        "on worker-1: `echo` failed (no exit code (connection failed)); last output:\n"
        "[Errno 111] Connection refused\nHint: " + UNREACHABLE
    )
    unknown = paramiko.SSHException("Server '[127.0.0.1]:2222' not found in known_hosts")
    assert ssh_failed("lb-1", "echo", unknown, UNREACHABLE).hint == KEY_UNKNOWN
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(new_key_pair("k").private_openssh.decode()))
    changed = paramiko.BadHostKeyException("lb-1", key, key)
    assert ssh_failed("lb-1", "echo", changed, "").hint == KEY_CHANGED


def test_an_unknown_host_is_refused_not_trusted_on_first_use(server: Server, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", 22, server.host_key.public_openssh) + "\n")  # another port
    nodes = SshRunner(inventory(server, tmp_path, str(known), {}))
    try:
        with pytest.raises(CommandFailed) as raised:
            nodes.run(nodes.inventory.node("manager-1"), "echo")
        assert raised.value.host == "manager-1" and KEY_UNKNOWN in str(raised.value)
        assert known.read_text().count("\n") == 1, "nothing was added to known_hosts"
    finally:
        nodes.close()


def test_host_keys_in_the_inventory_pin_without_a_file(server: Server, tmp_path: Path) -> None:
    keys = {name: server.host_key.public_openssh for name in ("lb-1", "manager-1", "worker-1")}
    nodes = SshRunner(inventory(server, tmp_path, None, keys))
    try:
        assert nodes.run(nodes.inventory.node("lb-1"), "echo").ok
    finally:
        nodes.close()
    wrong = SshRunner(inventory(server, tmp_path, None, {**keys, "worker-1": new_key_pair("x").public_openssh}))
    try:
        with pytest.raises(CommandFailed, match="on worker-1"):
            wrong.run(wrong.inventory.node("worker-1"), "echo")
    finally:
        wrong.close()


def test_an_inventory_that_pins_nothing_is_refused(server: Server, tmp_path: Path) -> None:
    with pytest.raises(SwarmlabError, match="pins no host key") as raised:
        SshRunner(inventory(server, tmp_path, None, {}))
    assert "ssh.host_keys" in str(raised.value) and "pulumi up" in str(raised.value)


def test_a_missing_known_hosts_file_is_named(server: Server, tmp_path: Path) -> None:
    nodes = SshRunner(inventory(server, tmp_path, str(tmp_path / "absent"), {}))
    with pytest.raises(SwarmlabError, match="absent does not exist"):
        nodes.run(nodes.inventory.node("lb-1"), "echo")


def test_a_node_that_stops_answering_mid_command_fails_within_the_timeout(server: Server, tmp_path: Path) -> None:
    nodes = pinned(server, tmp_path, server.host_key.public_openssh)
    try:
        started = time.monotonic()
        with pytest.raises(CommandFailed) as raised:
            nodes.run(nodes.inventory.node("worker-1"), "hang", timeout=1)
        assert time.monotonic() - started < 10
        assert raised.value.host == "worker-1" and raised.value.command == "hang"
        assert "no answer within 1s" in str(raised.value)
    finally:
        nodes.close()


def test_stdin_reaches_the_command_in_one_piece(server: Server, tmp_path: Path) -> None:
    # Invoke reads a plain stream a byte at a time, 10 ms apart: a secret would arrive in 40 pieces.
    nodes = pinned(server, tmp_path, server.host_key.public_openssh)
    secret = "s3cret-value-of-forty-four-characters-long!"
    try:
        answer = nodes.run(nodes.inventory.node("manager-1"), "chunks", stdin=secret, secrets=[secret]).stdout
    finally:
        nodes.close()
    assert answer == f"1 {secret}"


def test_a_swarm_write_refused_as_out_of_sequence_is_run_again(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cluster.runners.SEQUENCE_PAUSE", 0.01)
    nodes = pinned(server, tmp_path, server.host_key.public_openssh)
    manager = nodes.inventory.node("manager-1")
    try:
        assert nodes.run(manager, "refused-2").stdout == "ok\n"
        assert CALLS[b"refused-2"] == 3
        # Refused every time: the fifth refusal is the error, with Swarm's words in it.
        with pytest.raises(CommandFailed, match="out of sequence"):
            nodes.run(manager, "refused-9")
        assert CALLS[b"refused-9"] == 5
        # Unchecked, the last refusal comes back as the result.
        assert not nodes.run(manager, "refused-20", check=False).ok and CALLS[b"refused-20"] == 5
        # Any other failure is not run again.
        with pytest.raises(CommandFailed, match="no such node"):
            nodes.run(manager, "broken")
        assert CALLS[b"broken"] == 1
    finally:
        nodes.close()


def test_stream_masks_secrets_in_its_lines_and_in_every_error(server: Server, tmp_path: Path) -> None:
    nodes = pinned(server, tmp_path, server.host_key.public_openssh)
    node = nodes.inventory.node("manager-1")
    seen: list[str] = []
    try:
        with pytest.raises(CommandFailed) as failed:
            nodes.stream(node, "leak", seen.append, secrets=[LEAKED])
        with pytest.raises(CommandFailed) as timed_out:
            nodes.stream(node, "leak-hang", seen.append, timeout=1, secrets=[LEAKED])
    finally:
        nodes.close()
    assert failed.value.exit_code == 1 and "no answer within 1s" in str(timed_out.value)
    for error in (failed.value, timed_out.value):
        assert LEAKED not in str(error) and LEAKED not in error.output and "***" in error.output
    assert seen and all(LEAKED not in line for line in seen), seen


@dataclass
class _Open:
    """Stands in for an open connection: records that it was closed."""

    name: str
    closed: list[str]

    def close(self) -> None:
        self.closed.append(self.name)


def test_forgetting_the_jump_host_drops_every_connection_that_runs_through_it() -> None:
    """After the lb node (the jump host) reboots, every channel through it is dead: none may be reused."""
    from tests.unit.fake_runner import lab_shaped_inventory

    nodes = SshRunner(lab_shaped_inventory())
    closed: list[str] = []
    gateway = _Open("lb-1", closed)
    nodes._gateway = gateway
    nodes._connections = {
        "lb-1": gateway,
        "worker-1": _Open("worker-1", closed),
        "manager-1": _Open("manager-1", closed),
    }
    nodes.forget(nodes.inventory.node("worker-1"))
    assert closed == ["worker-1"] and set(nodes._connections) == {"lb-1", "manager-1"}
    nodes.forget(nodes.inventory.node("lb-1"))
    assert closed == ["worker-1", "manager-1", "lb-1"] and nodes._connections == {} and nodes._gateway is None


# --- two lbs: the jump host at the VIP's address, where whichever lb holds the VIP answers ---------------


def pair(
    server: Server, tmp_path: Path, known_hosts: str | None, host_keys: dict[str, str], lb_1_at: str = "127.0.0.1"
) -> SshRunner:
    """lb-1 (the jump host) and lb-2 both at 127.0.0.1, the test server's port: the VIP's floating IP
    (or lb-1 at an address of its own, `lb_1_at`)."""
    client_key = tmp_path / "id_ed25519"
    client_key.write_bytes(new_key_pair("client").private_openssh)
    client_key.chmod(0o600)
    lbs = [
        {"name": f"lb-{n}", "role": "lb", "private_ip": f"127.0.0.{ip}", "public_ip": public}
        for n, ip, public in ((1, 5, lb_1_at), (2, 7, "127.0.0.1"))
    ]
    return SshRunner(
        Inventory.model_validate(
            {
                "version": 1,
                "cluster": "unit",
                "provider": "static",
                "ssh": {
                    "private_key": str(client_key),
                    "jump_host": "lb-1",
                    "jump_port": server.port,
                    "known_hosts": known_hosts,
                    "host_keys": host_keys,
                },
                "network": {"cidr": "127.0.0.0/24", "vip": "127.0.0.4"},
                "nodes": [
                    *lbs,
                    {"name": "manager-1", "role": "manager", "private_ip": "127.0.0.11"},
                    {"name": "worker-1", "role": "worker", "private_ip": "127.0.0.21"},
                ],
                "endpoints": {"http": "https://127.0.0.1"},
            }
        )
    )


def assert_through_lb_2(nodes: SshRunner) -> None:
    lb1, lb2 = nodes.inventory.node("lb-1"), nodes.inventory.node("lb-2")
    assert nodes.run(lb2, "echo").stdout == "ok\n"
    assert nodes._gateway_node == "lb-2" and nodes.connection(lb2) is nodes._gateway
    # lb-1 is reached through lb-2 at its private address, as its own node: never a command of lb-1's on lb-2.
    through = nodes.connection(lb1)
    assert through is not nodes._gateway and through.host == "127.0.0.5" and through.gateway is nodes._gateway
    with pytest.raises(CommandFailed) as raised:  # the test server opens no hop
        nodes.run(lb1, "echo")
    assert raised.value.host == "lb-1"


def test_when_lb_2_holds_the_vip_the_runner_goes_through_it_with_its_pinned_key(server: Server, tmp_path: Path) -> None:
    keys = {"lb-1": new_key_pair("lb-1").public_openssh, "lb-2": server.host_key.public_openssh}
    nodes = pair(server, tmp_path, None, keys)
    try:
        assert_through_lb_2(nodes)
    finally:
        nodes.close()


def test_a_known_hosts_file_pinning_both_keys_at_the_vip_address_works_too(server: Server, tmp_path: Path) -> None:
    """As `pulumi stack output known_hosts` writes them (both lbs at the VIP's address, lb-1 first), with
    each lb's key also at its private address, where the runner reaches it through the other."""
    lb1 = new_key_pair("lb-1").public_openssh
    known = tmp_path / "known_hosts"
    lines = [
        known_hosts_line("127.0.0.1", server.port, lb1),
        known_hosts_line("127.0.0.1", server.port, server.host_key.public_openssh),
        known_hosts_line("127.0.0.5", 22, lb1),
        known_hosts_line("127.0.0.7", 22, server.host_key.public_openssh),
    ]
    known.write_text("\n".join(lines) + "\n")
    nodes = pair(server, tmp_path, str(known), {})
    try:
        assert_through_lb_2(nodes)
    finally:
        nodes.close()


def test_when_lb_1_holds_the_vip_it_stays_the_jump_host(server: Server, tmp_path: Path) -> None:
    keys = {"lb-1": server.host_key.public_openssh, "lb-2": new_key_pair("lb-2").public_openssh}
    nodes = pair(server, tmp_path, None, keys)
    try:
        assert nodes.run(nodes.inventory.node("lb-1"), "echo").ok and nodes._gateway_node == "lb-1"
    finally:
        nodes.close()


def test_a_key_neither_lb_pinned_stops_with_the_jump_host_and_both_tries_named(server: Server, tmp_path: Path) -> None:
    keys = {"lb-1": new_key_pair("lb-1").public_openssh, "lb-2": new_key_pair("lb-2").public_openssh}
    nodes = pair(server, tmp_path, None, keys)
    try:
        with pytest.raises(CommandFailed) as raised:
            nodes.run(nodes.inventory.node("worker-1"), "echo")
    finally:
        nodes.close()
    assert raised.value.host == "lb-1" and raised.value.hint == KEY_CHANGED
    assert "lb-1 at 127.0.0.1:" in raised.value.output and "lb-2 at 127.0.0.1:" in raised.value.output


def test_forgetting_the_lb_the_runner_went_through_drops_every_connection(server: Server, tmp_path: Path) -> None:
    keys = {"lb-1": new_key_pair("lb-1").public_openssh, "lb-2": server.host_key.public_openssh}
    nodes = pair(server, tmp_path, None, keys)
    try:
        nodes.run(nodes.inventory.node("lb-2"), "echo")
        nodes.connection(nodes.inventory.node("manager-1"))
        nodes.forget(nodes.inventory.node("lb-2"))
        assert nodes._connections == {} and nodes._gateway is None and nodes._gateway_node == ""
    finally:
        nodes.close()


def test_an_lb_1_that_does_not_answer_at_its_own_address_is_stood_in_for_by_lb_2(
    server: Server, tmp_path: Path
) -> None:
    """Machines of your own with an address per lb: lb-1's refuses the connection, lb-2's answers."""
    keys = {"lb-1": new_key_pair("lb-1").public_openssh, "lb-2": server.host_key.public_openssh}
    nodes = pair(server, tmp_path, None, keys, lb_1_at="127.0.0.2")  # nothing listens there
    try:
        assert nodes.run(nodes.inventory.node("lb-2"), "echo").ok and nodes._gateway_node == "lb-2"
    finally:
        nodes.close()


@dataclass
class Vip:
    """A loopback address that forwards to one of two servers, as a floating IP to whichever lb holds the
    VIP: `move` sends new connections to the other and resets the open ones (their packets now reach a
    host that has no such connection)."""

    to: int
    listener: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    sockets: list[socket.socket] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.to))
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def move(self, to: int) -> None:
        self.to = to
        for gone in self.sockets:
            with contextlib.suppress(OSError):
                gone.shutdown(socket.SHUT_RDWR)
                gone.close()
        self.sockets.clear()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_RDWR)


def test_when_the_vip_moves_off_the_lb_the_runner_went_through_the_next_command_goes_through_the_other(
    server: Server, tmp_path: Path
) -> None:
    """The runner went through lb-2, the VIP's holder; the VIP moves to lb-1. The dead gateway is not
    reopened at the shared address (it would meet lb-1's key there, refused as lb-2's, on every try): once
    a command has failed on it, the next one picks the lb that answers now. (Found by maintain-nodes
    handing the VIP over on the two-lb lab.)"""
    with ssh_server(new_key_pair("lb-1")) as lb_1:
        vip = Vip(to=server.port)
        threading.Thread(target=vip.serve, daemon=True).start()
        keys = {"lb-1": lb_1.host_key.public_openssh, "lb-2": server.host_key.public_openssh}
        nodes = pair(Server(vip.port, server.host_key), tmp_path, None, keys)
        first, second = nodes.inventory.node("lb-1"), nodes.inventory.node("lb-2")
        try:
            assert nodes.run(second, "echo").ok and nodes._gateway_node == "lb-2"
            vip.move(lb_1.port)
            with contextlib.suppress(CommandFailed):  # the first command after the move may meet the dead one
                nodes.run(first, "echo")
            assert nodes.run(first, "echo").ok and nodes._gateway_node == "lb-1"
        finally:
            nodes.close()
            vip.listener.close()
