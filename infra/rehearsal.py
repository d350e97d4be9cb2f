"""The Pulumi program (infra/), run here under Pulumi's mocks with the rehearsal's stack configuration.

Run as its own process, as `pulumi up` runs the program (cluster/ never imports Pulumi or infra/):

    python -m infra.rehearsal REQUEST.json RESULT.json

REQUEST holds {"stack_config": {...}, "floating_ip": "..."}; RESULT (mode 600: the user data holds
the nodes' private host keys) gets what the program asked for and exported (ProgramRun as JSON).

What `pulumi up` would hand OpenStack comes out of the very code that hands it: each server's user
data (Nova's `user_data`), the key pair's public key (Nova's metadata `public-keys`), the storage
volume's device path, and the stack's `inventory` output. The mocks answer as OpenStack would, with
the rehearsal's addresses: the floating IP is the lb node's address on the rehearsal's network,
which this machine routes to. Private host keys are made as pulumi-tls makes them (ed25519).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pulumi.runtime import config as runtime_config

# pulumi_openstack warns about its own deprecated aliases when imported; nothing here uses them.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_openstack  # noqa: F401

from infra.config import PROJECT
from infra.program import main

STACK = "rehearsal"
EXTERNAL_NETWORK_ID = "rehearsal-external"
# How a secret value travels (pulumi.runtime.rpc): a mapping with this signature and the value.
SECRET_KEY, SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


@dataclass(frozen=True)
class Server:
    """One server as the program asks Nova for it."""

    name: str  # the node's name (the resource name), e.g. manager-1
    user_data: str
    metadata: dict[str, str]


@dataclass
class ProgramRun:
    servers: dict[str, Server] = field(default_factory=dict)
    public_keys: list[str] = field(default_factory=list)  # the key pair's public key(s), as Nova's metadata has them
    volume_ids: dict[str, str] = field(default_factory=dict)  # Cinder volume resource name -> id
    outputs: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    return value["value"] if isinstance(value, dict) and value.get(SECRET_KEY) == SECRET_SIG else value


class _CloudMocks(pulumi.runtime.Mocks):
    """OpenStack's answers: ports keep their fixed addresses, the floating IP is `floating_ip`."""

    def __init__(self, floating_ip: str, run: ProgramRun) -> None:
        self.floating_ip = floating_ip
        self.run = run
        self.port_ips: dict[str, str] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        kind = args.typ.rsplit(":", 1)[-1]
        inputs = {k: _plain(v) for k, v in args.inputs.items()}
        resource_id = f"{kind.lower()}-{args.name}"
        outputs: dict[str, Any] = {}
        if kind == "Port":
            ips = [fixed["ipAddress"] for fixed in inputs.get("fixedIps", [])]
            self.port_ips[resource_id] = ips[0]
            outputs = {"allFixedIps": ips}
        elif kind == "Instance":
            self.run.servers[args.name] = Server(
                args.name, str(inputs.get("userData", "")), dict(inputs.get("metadata") or {})
            )
            outputs = {"accessIpV4": self.port_ips.get(inputs["networks"][0]["port"], "")}
        elif kind == "FloatingIp":
            outputs = {"address": self.floating_ip}
        elif kind == "Keypair":
            self.run.public_keys.append(str(inputs["publicKey"]))
        elif kind == "Volume":
            self.run.volume_ids[args.name] = resource_id
        elif kind == "PrivateKey":
            outputs = _ed25519_outputs()
        return resource_id, {**inputs, **outputs}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        if args.token == "openstack:networking/getNetwork:getNetwork":
            return {"id": EXTERNAL_NETWORK_ID, "name": args.args.get("name"), "external": True}, []
        raise RuntimeError(f"the rehearsal's mocks do not answer the invoke {args.token}")


def _ed25519_outputs() -> dict[str, str]:
    """A fresh key as pulumi-tls's PrivateKey (ED25519) returns it."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {"privateKeyOpenssh": private.decode(), "publicKeyOpenssh": public.decode() + "\n"}


def run_program(stack_config: Mapping[str, str], floating_ip: str) -> ProgramRun:
    """infra.program.main(), exactly what `pulumi up` runs, under mocks; what it asked for and exported."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    run = ProgramRun()
    try:
        pulumi.runtime.set_mocks(_CloudMocks(floating_ip, run), project=PROJECT, stack=STACK, preview=False)
        runtime_config.set_all_config({f"{PROJECT}:{key}": value for key, value in stack_config.items()})

        def program() -> pulumi.Output[None]:
            cluster = main()
            return pulumi.Output.all(cluster.inventory, cluster.known_hosts).apply(
                lambda values: run.outputs.update(inventory=values[0], known_hosts=values[1])
            )

        pulumi.runtime.test(program)()  # type: ignore[no-untyped-call]
    finally:
        runtime_config.set_all_config({})
        asyncio.set_event_loop(None)
        loop.close()
    if "inventory" not in run.outputs:
        raise RuntimeError("the Pulumi program ran under mocks but exported no inventory")
    return run


def main_cli(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m infra.rehearsal REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    run = run_program(request["stack_config"], request["floating_ip"])
    fd = os.open(argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(run), out)
    return 0


if __name__ == "__main__":
    sys.exit(main_cli(sys.argv[1:]))
