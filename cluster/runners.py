"""Running commands on nodes over SSH with Fabric: pinned host keys, the lb node as jump host.

The same code path serves the lab and a cloud: only the inventory differs.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, TypeVar

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, UnexpectedExit

from cluster.errors import CommandFailed, HostsFailed, redact
from cluster.inventory import Inventory, Node

T = TypeVar("T")
CONNECT_TIMEOUT = 15
# Nodes worked on at once: each is its own SSH connection (tunnelled through the jump host).
EACH_PARALLEL = 16


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


class Runner(Protocol):
    """What the executor and the fact readers need from a way to reach the nodes.

    Nodes (SSH) is the real one; unit tests use a fake that records commands and answers from data.
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

    def each(self, nodes: Iterable[Node], work: Callable[[Node], T], step: str) -> dict[str, T]: ...


class Nodes:
    """SSH connections to every node of an inventory, opened lazily and reused."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._gateway: Connection | None = None

    def _new_connection(self, host: str, port: int, gateway: Connection | None) -> Connection:
        ssh = self.inventory.ssh
        config = Config(overrides={"load_ssh_configs": False, "run": {"warn": True, "hide": True}})
        connection = Connection(
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
            },
        )
        # Fabric auto-accepts unknown host keys by default; pin them instead when we know them.
        if ssh.known_hosts:
            connection.client.load_host_keys(str(Path(ssh.known_hosts).expanduser()))
            connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return connection

    def _gateway_connection(self) -> Connection | None:
        ssh = self.inventory.ssh
        if ssh.jump_host is None:
            return None
        if self._gateway is None:
            jump = self.inventory.node(ssh.jump_host)
            address = str(jump.public_ip or jump.private_ip)
            gateway = self._new_connection(address, ssh.jump_port or ssh.port, None)
            # Open it once here, under the lock: Fabric would otherwise open the shared gateway from
            # several threads at once when connections to private nodes open in parallel.
            try:
                gateway.open()
            except (OSError, paramiko.SSHException) as error:
                raise CommandFailed(
                    ssh.jump_host,
                    f"ssh -p {ssh.jump_port or ssh.port} {ssh.user}@{address}",
                    None,
                    str(error),
                    "the jump host must answer SSH: is the lab or the lb node up?",
                ) from None
            self._gateway = gateway
        return self._gateway

    def connection(self, node: Node) -> Connection:
        with self._lock:
            if node.name not in self._connections:
                ssh = self.inventory.ssh
                if ssh.jump_host == node.name:
                    gateway = self._gateway_connection()
                    assert gateway is not None
                    self._connections[node.name] = gateway
                else:
                    gateway = self._gateway_connection()
                    address = str(node.private_ip if gateway else (node.public_ip or node.private_ip))
                    self._connections[node.name] = self._new_connection(address, ssh.port, gateway)
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
        so they are masked if they ever appear in an error message.
        """
        stream = io.StringIO(stdin) if isinstance(stdin, str) else stdin
        try:
            raw = self.connection(node).run(command, in_stream=stream if stream is not None else False, timeout=timeout)
        except (UnexpectedExit, CommandTimedOut) as error:
            result = error.result
            output = redact(result.stdout + result.stderr, tuple(secrets))
            raise CommandFailed(node.name, command, getattr(result, "exited", None), output, hint) from None
        except (OSError, paramiko.SSHException) as error:
            raise CommandFailed(
                node.name, command, None, str(error), hint or "check the node is up and the inventory's ssh settings"
            ) from None
        result = Result(node.name, command, raw.stdout, raw.stderr, raw.exited)
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
        raise CommandFailed as run() does. The command merges its stderr itself (2>&1) if it wants it."""
        lines = _Lines(on_line)
        try:
            raw = self.connection(node).run(
                command, in_stream=False, timeout=timeout, hide=False, out_stream=lines, err_stream=lines
            )
        except (UnexpectedExit, CommandTimedOut) as error:
            lines.flush_rest()
            result = error.result
            raise CommandFailed(
                node.name, command, getattr(result, "exited", None), result.stdout + result.stderr
            ) from None
        except (OSError, paramiko.SSHException) as error:
            raise CommandFailed(node.name, command, None, str(error), "check the node is up") from None
        lines.flush_rest()
        result = Result(node.name, command, raw.stdout, raw.stderr, raw.exited)
        if not result.ok:
            raise CommandFailed(
                node.name, command, result.exit_code, redact(result.stdout + result.stderr, tuple(secrets))
            )
        return result

    def put(self, node: Node, local: Path, remote: str) -> None:
        """Copy a (possibly large, binary) file to a node over SFTP."""
        try:
            self.connection(node).put(str(local), remote=remote)
        except (OSError, paramiko.SSHException) as error:
            raise CommandFailed(node.name, f"sftp put {local} {remote}", None, str(error)) from None

    def write(self, node: Node, remote: str, content: str | bytes, mode: int = 0o600) -> None:
        """Write a file on a node over SFTP (Invoke feeds stdin a byte per 10 ms: too slow for files)."""
        data = content.encode() if isinstance(content, str) else content
        try:
            self.connection(node).put(io.BytesIO(data), remote=remote)
            self.connection(node).sftp().chmod(remote, mode)
        except (OSError, paramiko.SSHException) as error:
            raise CommandFailed(node.name, f"sftp write {remote}", None, str(error)) from None

    def each(self, nodes: Iterable[Node], work: Callable[[Node], T], step: str) -> dict[str, T]:
        """Run work(node) on every node in parallel; report every host that failed, not just the first."""
        nodes = list(nodes)
        if not nodes:
            return {}
        results: dict[str, T] = {}
        failures: dict[str, Exception] = {}
        with ThreadPoolExecutor(max_workers=min(EACH_PARALLEL, len(nodes))) as pool:
            futures = {node.name: pool.submit(work, node) for node in nodes}
            for name, future in futures.items():
                try:
                    results[name] = future.result()
                except Exception as error:  # collected and re-raised together below
                    failures[name] = error
        if failures:
            raise HostsFailed(step, failures)
        return results

    def close(self) -> None:
        # Private nodes first: their channels run through the gateway's transport.
        ordered = [c for c in self._connections.values() if c is not self._gateway]
        if self._gateway is not None:
            ordered.append(self._gateway)
        for connection in ordered:
            with contextlib.suppress(EOFError, OSError, paramiko.SSHException):  # already gone
                connection.close()
        self._connections.clear()
        self._gateway = None


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
