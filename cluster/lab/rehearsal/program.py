"""The Pulumi program run for the rehearsal: `python -m infra.rehearsal` in a process of its own (as
`pulumi up` runs the program; cluster/ imports neither Pulumi nor infra/), and what it hands back:
each server's user data, the key pair's public key, the volumes and the stack's outputs."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.local import run_local
from cluster.state import write_private


@dataclass(frozen=True)
class Server:
    """One server as the program asks Nova for it."""

    name: str  # the node's name (the resource name), e.g. manager-1
    user_data: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class ProgramRun:
    servers: dict[str, Server]
    public_keys: list[str]  # the key pair's public key(s), as Nova's metadata has them
    volume_ids: dict[str, str]  # Cinder volume resource name -> id
    outputs: dict[str, Any]


def parse_program_run(text: str) -> ProgramRun:
    found = json.loads(text)
    servers = {name: Server(**server) for name, server in found["servers"].items()}
    return ProgramRun(servers, list(found["public_keys"]), dict(found["volume_ids"]), dict(found["outputs"]))


def run_program(stack_config: Mapping[str, str], floating_ip: str, scratch: Path) -> ProgramRun:
    """infra.program.main() under mocks, in its own process; the request and the result (which holds the
    nodes' private host keys) stay in a private directory under `scratch` and are removed after."""
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=scratch) as work:
        request, result = Path(work) / "request.json", Path(work) / "result.json"
        write_private(request, json.dumps({"stack_config": dict(stack_config), "floating_ip": floating_ip}).encode())
        run_local(
            [sys.executable, "-m", "infra.rehearsal", str(request), str(result)],
            hint="the Pulumi program under mocks (infra/rehearsal.py)",
        )
        return parse_program_run(result.read_text())
