"""Running commands on nodes over SSH with Fabric: pinned host keys, the lb node as jump host.

The same code path serves the lab and a cloud: only the inventory differs. With two lbs the jump host
is lb-1 at the VIP's public address, where whichever lb holds the VIP answers: when lb-2's key
answers there (or lb-1's address does not answer at all and lb-2 has another), the runner goes
through lb-2 instead, each lb checked against its own pinned key only.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, UnexpectedExit

from cluster.errors import CommandFailed, SwarmlabError, redact
from cluster.inventory import Inventory, Node, Role
from cluster.parallel import at_once

T = TypeVar("T")


class WholeStdin(io.StringIO):
    """stdin handed to Invoke in one read: it reads a stream that is not a terminal one byte per read,
    with a 10 ms pause after each, so a 44-character secret took 0.45 s and a join token 0.9 s."""

    def read(self, size: int | None = -1) -> str:
        return super().read()


# TCP connect, SSH banner, authentication and opening a channel (a session, or a hop through the jump
# host): a node that accepts the connection but does not answer fails here instead of hanging.
CONNECT_TIMEOUT = 15
# paramiko logs a failed channel through the jump host ("Secsh channel 0 open FAILED") on its own;
# the CommandFailed we raise reports it with the host, so its own line is only noise.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
# A command that runs longer than this, unless its operation allows more (builds), is taken for a
# node that stopped answering: the task stops with the host named instead of waiting for ever.
COMMAND_TIMEOUT = 300
# SSH keepalives on every connection: NAT and firewalls keep idle connections, and a peer that is
# gone makes the socket fail instead of idling.
KEEPALIVE_INTERVAL = 15
# One SFTP read or write (of a chunk, not a whole file): a node that stops answering mid-upload fails.
SFTP_TIMEOUT = 120
NO_PINS = (
    "pins no host key (neither ssh.known_hosts nor ssh.host_keys): no host key is ever trusted on first "
    "use. For the lab, `fab lab-up` writes them; a Pulumi stack's inventory carries ssh.host_keys (run "
    "`pulumi up` with this version); for machines of your own, read each node's key where you trust the "
    "channel (its console: `cat /etc/ssh/ssh_host_ed25519_key.pub`) and list it in ssh.host_keys by node "
    "name, or in a known_hosts file named by ssh.known_hosts"
)
KEY_CHANGED = (
    "this node's SSH host key is not the pinned one: the machine was rebuilt, or someone is in the "
    "middle. Check it on the node's console before you trust a new key, then update the inventory's pins"
)
KEY_UNKNOWN = "no pinned host key for this node's address: add it to ssh.host_keys or the known_hosts file"
# What a failed connection raises (not a command that exits non-zero): a refused or
# reset socket, a peer that closes mid-read, paramiko's own (authentication, host keys, channels).
SSH_ERRORS = (OSError, EOFError, paramiko.SSHException)
UNREACHABLE = "check the node is up and the inventory's ssh settings"


@dataclass(frozen=True)
class Result:
    host: str
    command: str
    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# Swarm's optimistic concurrency: `docker node update` and `docker service update` send the version of
# the object they read; when a heartbeat or the orchestrator changed it in between, the manager answers
# "update out of sequence" and applies nothing. The CLI does not try again (a lab test's `node update`
# failed so in CI, leaving a worker drained); running the command again reads the new version.
OUT_OF_SEQUENCE = "update out of sequence"
SEQUENCE_ATTEMPTS = 5
SEQUENCE_PAUSE = 0.5  # seconds, times the attempt's number


def again_if_out_of_sequence(attempt: Callable[[], Result]) -> Result:
    """The result of `attempt`, called again (up to SEQUENCE_ATTEMPTS in all) while Swarm refuses it as
    out of sequence, whether that comes back as a failed result or as CommandFailed."""
    for number in range(1, SEQUENCE_ATTEMPTS + 1):
        last = number == SEQUENCE_ATTEMPTS
        try:
            result = attempt()
        except CommandFailed as error:
            if last or OUT_OF_SEQUENCE not in error.output:
                raise
        else:
            if last or result.ok or OUT_OF_SEQUENCE not in result.stdout + result.stderr:
                return result
        time.sleep(SEQUENCE_PAUSE * number)
    raise AssertionError("unreachable: the last attempt returns or raises")


class Runner(Protocol):
    """What the executor and the fact readers need from a way to reach the nodes.

    SshRunner (SSH) is the real one; unit tests use a fake that records commands and answers from data.
    """

    inventory: Inventory

    def run(
        self,
        node: Node,
        command: str,
        *,
        check: bool = True,
        stdin: str | IO[str] | None = None,
        timeout: float | None = None,
        secrets: Sequence[str] = (),
        hint: str = "",
    ) -> Result: ...

    def write(self, node: Node, remote: str, content: str | bytes, mode: int = 0o600) -> None: ...

    def stream(
        self,
        node: Node,
        command: str,
        on_line: Callable[[str], None],
        *,
        timeout: float | None = None,
        secrets: Sequence[str] = (),
    ) -> Result: ...

    def put(self, node: Node, local: Path, remote: str) -> None: ...

    def get(self, node: Node, remote: str, local: Path) -> None:
        """Fetch a file from a node to the operator's machine, created readable by its owner only."""
        ...

    def forget(self, node: Node) -> None:
        """Drop the node's connection: its machine was replaced (new host key) or restarted."""
        ...

    def each(self, nodes: Iterable[Node], work: Callable[[Node], T], step: str) -> dict[str, T]: ...


class _Connection(Connection):  # type: ignore[misc]  # Fabric ships no type hints
    """Fabric's connection, bounded in time everywhere: keepalives and a channel timeout once open, a
    timed hop through the jump host, and SFTP reads and writes that time out."""

    def open(self) -> Any:
        result = super().open()
        self.transport.set_keepalive(KEEPALIVE_INTERVAL)
        self.transport.channel_timeout = CONNECT_TIMEOUT  # paramiko waits an hour for a channel by default
        return result

    def open_gateway(self) -> Any:
        # Fabric's own opens the hop with no timeout: a jump host that stops answering would hang here.
        self.gateway.open()
        return self.gateway.transport.open_channel(
            kind="direct-tcpip", dest_addr=(self.host, int(self.port)), src_addr=("", 0), timeout=CONNECT_TIMEOUT
        )

    def sftp(self) -> paramiko.SFTPClient:
        client: paramiko.SFTPClient = super().sftp()
        channel = client.get_channel()
        if channel is not None:
            channel.settimeout(SFTP_TIMEOUT)
        return client


def _pkey(public_openssh: str) -> paramiko.PKey:
    key_type, data = public_openssh.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))


def ssh_failed(host: str, command: str, error: Exception, hint: str) -> CommandFailed:
    """The one error for a node SSH could not reach or stopped talking to (one of SSH_ERRORS): no exit
    code, the error's own words, and `hint`, unless the host key is unknown or not the pinned one."""
    if isinstance(error, paramiko.BadHostKeyException):
        hint = KEY_CHANGED
    elif isinstance(error, paramiko.SSHException) and "known_hosts" in str(error):
        hint = KEY_UNKNOWN
    return CommandFailed(host, command, None, str(error), hint)


class SshRunner:
    """SSH connections to every node of an inventory, opened lazily and reused.

    Host keys are always pinned (paramiko's RejectPolicy): an inventory that pins none is refused, an
    unknown or changed key stops the task with the host named.
    """

    def __init__(self, inventory: Inventory) -> None:
        if not inventory.ssh.known_hosts and not inventory.ssh.host_keys:
            raise SwarmlabError(f"the inventory of cluster {inventory.cluster} {NO_PINS}")
        self.inventory = inventory
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._gateway: Connection | None = None
        self._gateway_node = ""  # the node the gateway reached: the jump host, or the other lb of a pair

    def _new_connection(
        self, node: Node, host: str, port: int, gateway: Connection | None, *, own_keys_only: bool = False
    ) -> Connection:
        ssh = self.inventory.ssh
        config = Config(overrides={"load_ssh_configs": False, "run": {"warn": True, "hide": True}})
        connection = _Connection(
            host,
            user=ssh.user,
            port=port,
            config=config,
            gateway=gateway,
            connect_timeout=CONNECT_TIMEOUT,
            connect_kwargs={
                "key_filename": str(Path(ssh.private_key).expanduser()),
                "look_for_keys": False,
                "allow_agent": False,
                "banner_timeout": CONNECT_TIMEOUT,
                "auth_timeout": CONNECT_TIMEOUT,
            },
        )
        self._pin(connection.client, node, host, port, own_keys_only=own_keys_only)
        return connection

    def _pin(
        self, client: paramiko.SSHClient, node: Node, host: str, port: int, *, own_keys_only: bool = False
    ) -> None:
        """The keys this node may present, and nothing trusted on first use (Fabric would auto-add).

        `own_keys_only`: an address two lbs share (the VIP's) pins both their keys, and paramiko checks
        the first key of a type only; this connection then trusts `node`'s own keys alone."""
        ssh = self.inventory.ssh
        if own_keys_only:
            entry = host if port == 22 else f"[{host}]:{port}"
            keys = self._own_keys(node)
            client.get_host_keys().clear()
            for key in keys:
                client.get_host_keys().add(entry, key.get_name(), key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            return
        if ssh.known_hosts:
            path = Path(ssh.known_hosts).expanduser()
            if not path.is_file():
                raise SwarmlabError(f"ssh.known_hosts of cluster {self.inventory.cluster}: {path} does not exist")
            client.load_host_keys(str(path))
        if node.name in ssh.host_keys:
            # Under the name paramiko looks the server up by: [host]:port off the default port.
            entry = host if port == 22 else f"[{host}]:{port}"
            key = _pkey(ssh.host_keys[node.name])
            client.get_host_keys().add(entry, key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def _own_keys(self, node: Node) -> list[paramiko.PKey]:
        """The keys pinned for `node` itself, wherever it is reached: ssh.host_keys by its name, else the
        known_hosts lines at its private address (where the runner reaches it through the jump host)."""
        ssh = self.inventory.ssh
        if node.name in ssh.host_keys:
            return [_pkey(ssh.host_keys[node.name])]
        if not ssh.known_hosts:
            return []
        known = paramiko.HostKeys()
        path = Path(ssh.known_hosts).expanduser()
        if path.is_file():
            known.load(str(path))
        entry = str(node.private_ip) if ssh.port == 22 else f"[{node.private_ip}]:{ssh.port}"
        found = known.lookup(entry)
        return list(found.values()) if found is not None else []

    def _jump_candidates(self, jump: Node) -> list[Node]:
        """The jump host, then (two lbs) the other lb: it answers at the shared address when it holds the
        VIP, or at an address of its own."""
        if jump.role != Role.LB:
            return [jump]
        return [jump, *(lb for lb in self.inventory.lbs if lb.name != jump.name)]

    def _gateway_connection(self) -> Connection | None:
        ssh = self.inventory.ssh
        if ssh.jump_host is None:
            return None
        if self._gateway is None:
            jump = self.inventory.node(ssh.jump_host)
            port = ssh.jump_port or ssh.port
            candidates = self._jump_candidates(jump)
            addresses = [str(n.public_ip or n.private_ip) for n in candidates]
            failures: list[tuple[Node, str, Exception]] = []
            for candidate, address in zip(candidates, addresses, strict=True):
                if failures and not self._worth_trying(failures, address):
                    continue
                # At the address both lbs share, each is held to its own key (when it has one pinned).
                own_keys_only = addresses.count(address) > 1 and bool(self._own_keys(candidate))
                gateway = self._new_connection(candidate, address, port, None, own_keys_only=own_keys_only)
                # Open it once here, under the lock: Fabric would otherwise open the shared gateway from
                # several threads at once when connections to private nodes open in parallel.
                try:
                    gateway.open()
                except SSH_ERRORS as error:
                    failures.append((candidate, address, error))
                    continue
                self._gateway, self._gateway_node = gateway, candidate.name
                break
            else:
                raise _jump_failed(failures, ssh.user, port)
        return self._gateway

    @staticmethod
    def _worth_trying(failures: list[tuple[Node, str, Exception]], address: str) -> bool:
        """Another lb is tried where the last one answered with a key not its own (the other holds the
        VIP there), or at an address not tried yet; not where nothing answered (it would not now)."""
        last = failures[-1]
        return isinstance(last[2], paramiko.BadHostKeyException) or address not in {a for _, a, _ in failures}

    def connection(self, node: Node) -> Connection:
        with self._lock:
            if node.name not in self._connections:
                ssh = self.inventory.ssh
                gateway = self._gateway_connection()
                if gateway is not None and node.name == self._gateway_node:
                    self._connections[node.name] = gateway
                else:
                    # Through the gateway (the jump host itself too, when the other lb of a pair is it).
                    address = str(node.private_ip if gateway else (node.public_ip or node.private_ip))
                    self._connections[node.name] = self._new_connection(node, address, ssh.port, gateway)
            connection = self._connections[node.name]
        return connection

    def run(
        self,
        node: Node,
        command: str,
        *,
        check: bool = True,
        stdin: str | IO[str] | None = None,
        timeout: float | None = None,
        secrets: Sequence[str] = (),
        hint: str = "",
    ) -> Result:
        """Run a command; on failure raise CommandFailed with the host, command and output tail.

        Secrets never go on the command line we log: pass them on stdin, and list them in `secrets`
        so they are masked if they ever appear in an error message. A Swarm write refused as out of
        sequence (nothing applied) is run again; a stdin stream that cannot be read twice is not.
        """
        if stdin is not None and not isinstance(stdin, str):
            return self._run_once(node, command, check=check, stdin=stdin, timeout=timeout, secrets=secrets, hint=hint)
        return again_if_out_of_sequence(
            lambda: self._run_once(node, command, check=check, stdin=stdin, timeout=timeout, secrets=secrets, hint=hint)
        )

    def _run_once(
        self,
        node: Node,
        command: str,
        *,
        check: bool,
        stdin: str | IO[str] | None,
        timeout: float | None,
        secrets: Sequence[str],
        hint: str,
    ) -> Result:
        stream = WholeStdin(stdin) if isinstance(stdin, str) else stdin
        limit = COMMAND_TIMEOUT if timeout is None else timeout
        why = f"no answer within {limit:.0f}s: is {node.name} up and answering? (the command may still run there)"
        started = time.monotonic()
        try:
            raw = self.connection(node).run(command, in_stream=stream if stream is not None else False, timeout=limit)
        except CommandTimedOut as error:
            output = redact(error.result.stdout + error.result.stderr, tuple(secrets))
            raise CommandFailed(node.name, command, None, output, f"{hint} {why}".strip()) from None
        except UnexpectedExit as error:
            result = error.result
            output = redact(result.stdout + result.stderr, tuple(secrets))
            raise CommandFailed(node.name, command, getattr(result, "exited", None), output, hint) from None
        except SSH_ERRORS as error:
            self._drop_after_failure(node)
            raise ssh_failed(node.name, command, error, hint or UNREACHABLE) from None
        result = Result(node.name, command, raw.stdout, raw.stderr, raw.exited)
        if result.exit_code == -1 and time.monotonic() - started >= limit:
            # Timed out, closed by invoke's timer, which can lose the race to flag it as a timeout.
            output = redact(result.stdout + result.stderr, tuple(secrets))
            raise CommandFailed(node.name, command, None, output, f"{hint} {why}".strip())
        if check and not result.ok:
            output = redact(result.stdout + result.stderr, tuple(secrets))
            raise CommandFailed(node.name, command, result.exit_code, output, hint)
        return result

    def stream(
        self,
        node: Node,
        command: str,
        on_line: Callable[[str], None],
        *,
        timeout: float | None = None,
        secrets: Sequence[str] = (),
    ) -> Result:
        """Run a command and hand each line of its output to on_line as it arrives (`fab logs --follow`);
        raise CommandFailed as run() does. The command merges its stderr itself (2>&1) if it wants it.
        `secrets` are masked in the lines handed on and in every error, as run() masks them."""
        masked = tuple(secrets)
        lines = _Lines(lambda line: on_line(redact(line, masked)))
        why = f"no answer within {timeout:.0f}s: is {node.name} up and answering?" if timeout else ""
        started = time.monotonic()
        try:
            raw = self.connection(node).run(
                command, in_stream=False, timeout=timeout, hide=False, out_stream=lines, err_stream=lines
            )
        except CommandTimedOut as error:
            lines.flush_rest()
            output = redact(error.result.stdout + error.result.stderr, masked)
            raise CommandFailed(node.name, command, None, output, why) from None
        except UnexpectedExit as error:
            raw = error.result
        except SSH_ERRORS as error:
            self._drop_after_failure(node)
            raise ssh_failed(node.name, command, error, UNREACHABLE) from None
        lines.flush_rest()
        result = Result(node.name, command, raw.stdout, raw.stderr, raw.exited)
        output = redact(result.stdout + result.stderr, masked)
        if timeout is not None and result.exit_code == -1 and time.monotonic() - started >= timeout:
            # Closed by invoke's timer, which can lose the race to flag it as a timeout (as in run()).
            raise CommandFailed(node.name, command, None, output, why)
        if not result.ok:
            raise CommandFailed(node.name, command, result.exit_code, output)
        return result

    def put(self, node: Node, local: Path, remote: str) -> None:
        """Copy a (possibly large, binary) file to a node over SFTP."""
        try:
            self.connection(node).put(str(local), remote=remote)
        except SSH_ERRORS as error:
            self._drop_after_failure(node)
            raise ssh_failed(node.name, f"sftp put {local} {remote}", error, "") from None

    def get(self, node: Node, remote: str, local: Path) -> None:
        """Fetch a (possibly large, binary) file over SFTP into a file created with mode 600: backups
        hold data and the swarm's keys."""
        descriptor = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                self.connection(node).get(remote, local=handle)
        except SSH_ERRORS as error:
            self._drop_after_failure(node)
            local.unlink(missing_ok=True)
            raise ssh_failed(node.name, f"sftp get {remote} {local}", error, "") from None

    def forget(self, node: Node) -> None:
        """Drop the node's connection; the jump host's takes every connection with it (they run through it)."""
        with self._lock:
            if node.name in (self.inventory.ssh.jump_host, self._gateway_node):
                dropped = [c for c in self._connections.values() if c is not self._gateway]
                dropped += [self._gateway] if self._gateway is not None else []
                self._connections.clear()
                self._gateway, self._gateway_node = None, ""
            else:
                connection = self._connections.pop(node.name, None)
                dropped = [connection] if connection is not None else []
        for gone in dropped:
            with contextlib.suppress(*SSH_ERRORS):
                gone.close()

    def _drop_after_failure(self, node: Node) -> None:
        """After an SSH failure on `node`: its connection is dropped, and every connection if the gateway's
        own transport died. With two lbs that is the VIP moving off the lb the runner went through: the
        next command then picks the lb that answers now, rather than reopening the dead one, which would
        meet the other lb's key at the shared address on every try."""
        with self._lock:
            gateway = self._gateway
            dead = gateway is not None and not gateway.is_connected
        self.forget(self.inventory.node(self._gateway_node) if dead and self._gateway_node else node)

    def write(self, node: Node, remote: str, content: str | bytes, mode: int = 0o600) -> None:
        """Write a file on a node over SFTP (stdin is for short values: secrets and join tokens)."""
        data = content.encode() if isinstance(content, str) else content
        try:
            sftp = self.connection(node).sftp()
            # Created with its final mode before any byte is written: a key is never readable by others.
            with sftp.open(remote, "wb") as handle:
                handle.chmod(mode)
                handle.set_pipelined(True)  # as Fabric's put does: large build contexts go at full speed
                handle.write(data)
            sftp.chmod(remote, mode)  # an existing file keeps its old mode through open(): force it
        except SSH_ERRORS as error:
            self._drop_after_failure(node)
            raise ssh_failed(node.name, f"sftp write {remote}", error, "") from None

    def each(self, nodes: Iterable[Node], work: Callable[[Node], T], step: str) -> dict[str, T]:
        """Run work(node) on every node in parallel; report every host that failed, not just the first."""
        outcomes = at_once(nodes, work)
        outcomes.raise_failures(step, lambda node: node.name)
        return {node.name: result for node, result in outcomes.results}

    def close(self) -> None:
        # Private nodes first: their channels run through the gateway's transport.
        ordered = [c for c in self._connections.values() if c is not self._gateway]
        if self._gateway is not None:
            ordered.append(self._gateway)
        for connection in ordered:
            with contextlib.suppress(*SSH_ERRORS):  # already gone
                connection.close()
        self._connections.clear()
        self._gateway, self._gateway_node = None, ""


def _jump_failed(failures: list[tuple[Node, str, Exception]], user: str, port: int) -> CommandFailed:
    """The jump host's failure (the first one), and with two lbs what the other lb answered too."""
    jump, address, error = failures[0]
    failed = ssh_failed(
        jump.name,
        f"ssh -p {port} {user}@{address}",
        error,
        "the jump host must answer SSH: is the lab or the lb node up?",
    )
    if len(failures) == 1:
        return failed
    tried = "\n".join(f"{node.name} at {where}: {problem}" for node, where, problem in failures)
    return CommandFailed(failed.host, failed.command, None, tried, failed.hint)


class _Lines(io.TextIOBase):
    """A text stream that hands complete lines to a callback (Invoke writes output in chunks)."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._partial = ""

    def write(self, text: str) -> int:
        *complete, self._partial = (self._partial + text).split("\n")
        for line in complete:
            self._on_line(line)
        return len(text)

    def flush_rest(self) -> None:
        if self._partial:
            self._on_line(self._partial)
            self._partial = ""
