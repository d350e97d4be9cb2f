"""A Runner that reaches no node: it answers commands from a script of (pattern, output) pairs and
records every command and file, so tasks can be tested end to end without SSH. It also keeps the
storage node's registry: what a build pushes or a copy puts there, the registry check finds, with a
digest (unless a scripted answer says otherwise)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from cluster.config import parse_config
from cluster.errors import CommandFailed, HostsFailed, redact
from cluster.inventory import Inventory, Node
from cluster.lab.layout import lab_inventory
from cluster.providers.static import StaticProvider
from cluster.runners import Result
from cluster.session import Session
from cluster.state import StatePaths
from registry.model import PUSH_ENDPOINT

T = TypeVar("T")


@dataclass
class Call:
    node: str
    command: str
    stdin: str | None


@dataclass
class FakeRunner:
    inventory: Inventory
    # (node pattern, command pattern, stdout, exit code): the first match answers.
    answers: list[tuple[str, str, str, int]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    modes: dict[tuple[str, str], int] = field(default_factory=dict)  # each written file's mode
    # Files on the nodes that `get` fetches: (node, path) -> content.
    remote_files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)
    # The storage node's registry: image key (name:tag) -> its manifest's digest.
    registry: dict[str, str] = field(default_factory=dict)

    def answer(self, command: str, stdout: str = "", exit_code: int = 0, node: str = ".*") -> None:
        self.answers.insert(0, (node, command, stdout, exit_code))

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
        self.calls.append(Call(node.name, command, stdin if isinstance(stdin, str) or stdin is None else "<stream>"))
        stdout, code = self._registry(command), 0
        for node_pattern, pattern, out, exit_code in self.answers:
            if re.fullmatch(node_pattern, node.name) and re.search(pattern, command):
                stdout, code = out, exit_code
                break
        result = Result(node.name, command, stdout, "", code)
        if check and not result.ok:
            # As the SSH runner does: the secrets the caller names are masked in the error.
            raise CommandFailed(node.name, command, code, redact(stdout, tuple(secrets)), hint)
        return result

    def _registry(self, command: str) -> str:
        """A push or copy into the registry's writable endpoint puts the image there; the registry check
        answers each image's presence and digest (the cache: never)."""
        for key in re.findall(
            rf"(?:docker push -q |docker://){re.escape(PUSH_ENDPOINT)}/swarmlab/(\S+?)(?:;|$|\s)", command
        ):
            self.registry[key] = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        if command.startswith("for ref in ") and "/manifests/" in command:
            refs = command.removeprefix("for ref in ").split(";", 1)[0].split()
            return "".join(
                f"{ref} yes no {self.registry[ref]}\n" if ref in self.registry else f"{ref} no no -\n" for ref in refs
            )
        return ""

    def stream(
        self,
        node: Node,
        command: str,
        on_line: Callable[[str], None],
        *,
        timeout: float | None = None,
        secrets: Sequence[str] = (),
    ) -> Result:
        result = self.run(node, command, timeout=timeout, secrets=secrets)
        for line in result.stdout.splitlines():
            on_line(line)
        return result

    def write(self, node: Node, remote: str, content: str | bytes, mode: int = 0o600) -> None:
        self.files[(node.name, remote)] = content.encode() if isinstance(content, str) else content
        self.modes[(node.name, remote)] = mode

    def put(self, node: Node, local: Path, remote: str) -> None:
        self.files[(node.name, remote)] = local.read_bytes()

    def get(self, node: Node, remote: str, local: Path) -> None:
        """Fetch what `remote_files` holds for (node, path); a missing one fails as SFTP would."""
        self.calls.append(Call(node.name, f"sftp get {remote}", None))
        if (node.name, remote) not in self.remote_files:
            raise CommandFailed(node.name, f"sftp get {remote} {local}", None, "No such file")
        local.write_bytes(self.remote_files[(node.name, remote)])
        local.chmod(0o600)

    def forget(self, node: Node) -> None:
        self.forgotten.append(node.name)

    def each(self, nodes: Iterable[Node], work: Callable[[Node], T], step: str) -> dict[str, T]:
        results: dict[str, T] = {}
        failures: dict[str, Exception] = {}
        for node in nodes:
            try:
                results[node.name] = work(node)
            except Exception as error:
                failures[node.name] = error
        if failures:
            raise HostsFailed(step, failures)
        return results

    def commands(self, pattern: str = "") -> list[str]:
        return [c.command for c in self.calls if re.search(pattern, c.command)]


def lab_shaped_inventory() -> Inventory:
    """The default lab's inventory (3 managers, 3 workers, lb, storage), with no lab behind it."""
    return lab_inventory(parse_config({}), StatePaths(Path("/state")))


def two_lbs_inventory() -> Inventory:
    """The default lab's inventory with a second lb (lb-2 at .7) and the virtual IP (.4), as
    `lb_count: 2` plans them; both lbs at the same public address, as a cloud's VIP floating IP."""
    data = lab_shaped_inventory().model_dump(mode="json")
    lb2 = {"name": "lb-2", "role": "lb", "private_ip": "10.20.0.7", "public_ip": "127.0.0.1"}
    data["nodes"].insert(1, lb2)
    data["network"]["vip"] = "10.20.0.4"
    return Inventory.model_validate(data)


def fake_session(runner: FakeRunner, tmp_path: Path, dry_run: bool = False, autolock: bool = False) -> Session:
    """A session on a static target whose state directory is tmp_path and whose SSH is `runner`; autolock
    off unless `autolock` (tests/unit/test_autolock.py covers it; the others leave its steps out)."""
    config = parse_config({"state_dir": str(tmp_path), "autolock": autolock})
    return Session(config, StaticProvider(), runner, dry_run)


def answer_as_written(runner: FakeRunner, files: dict[tuple[str, str], bytes]) -> None:
    """Make `runner` answer the file and daemon facts as if `files` (another run's writes) were on
    their nodes: each file's sha256, and a `.new` config swapped in with its daemon running."""
    for (node, path), content in files.items():
        sha = hashlib.sha256(content).hexdigest()
        if path.endswith(".new"):
            facts = f"config_sha={sha}\nsystemd=no\nrunning=yes\n"
            runner.answer(rf"sha256sum {re.escape(path.removesuffix('.new'))} ", facts, node=node)
        else:
            runner.answer(rf"sha256sum {re.escape(path)} ", sha, node=node)
