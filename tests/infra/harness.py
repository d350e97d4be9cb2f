"""Run the Pulumi program under pulumi.runtime.set_mocks and record what it declares.

Each run gets fresh mocks and a fresh mock monitor, so one process can run the program many times
with different configurations. The monitor records what the engine would see on the wire for each
resource (parent, protect, secret outputs); the mocks answer with plausible OpenStack outputs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pulumi.runtime import config as runtime_config
from pulumi.runtime.mocks import MockMonitor

from infra.config import PROJECT
from infra.program import main
from infra.swarm import SwarmCluster

STACK = "demo"
FLOATING_IP = "203.0.113.10"
# Two lbs: each lb's own floating IP, for SSH (the VIP's is FLOATING_IP).
SSH_FLOATING_IPS = {"lb-1-ssh": "203.0.113.21", "lb-2-ssh": "203.0.113.22"}
EXTERNAL_NETWORK_ID = "ext-net-0001"
# The smallest valid configuration: everything else takes its documented default.
BASE_CONFIG: dict[str, str] = {"admin_cidrs": "198.51.100.0/24", "key_pair": "course-key"}


@dataclass(frozen=True)
class Declared:
    """One resource as the program declared it, with the outputs the mocks gave back."""

    type: str
    name: str
    id: str
    inputs: dict[str, Any]
    parent: str
    protect: bool
    secret_outputs: tuple[str, ...]
    secret_inputs: frozenset[str] = frozenset()

    @property
    def kind(self) -> str:
        """The short type: 'openstack:networking/port:Port' -> 'Port'."""
        return self.type.rsplit(":", 1)[-1]


# How a secret value travels (pulumi.runtime.rpc): a mapping with this signature and the value.
SECRET_KEY, SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}
        self.ids: dict[tuple[str, str], str] = {}
        self.port_ips: dict[str, str] = {}
        self.secret_inputs: dict[tuple[str, str], frozenset[str]] = {}
        # Every private key pulumi-tls "made" (real ones, so tests can check they match their halves).
        self.private_keys: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        kind = args.typ.rsplit(":", 1)[-1]
        resource_id = f"{kind.lower()}-{args.name}"
        # Secret inputs reach the mocks wrapped as on the wire: note which, and keep the plain value.
        secret = {k for k, v in args.inputs.items() if isinstance(v, dict) and v.get(SECRET_KEY) == SECRET_SIG}
        inputs = {k: args.inputs[k]["value"] if k in secret else v for k, v in args.inputs.items()}
        self.inputs[(args.typ, args.name)] = inputs
        self.secret_inputs[(args.typ, args.name)] = frozenset(secret)
        self.ids[(args.typ, args.name)] = resource_id
        return resource_id, {**inputs, **self._outputs(kind, inputs, resource_id)}

    def _outputs(self, kind: str, inputs: Mapping[str, Any], resource_id: str) -> dict[str, Any]:
        if kind == "Port":
            ips = [fixed["ipAddress"] for fixed in inputs.get("fixedIps", [])]
            self.port_ips[resource_id] = ips[0]
            return {"allFixedIps": ips, "macAddress": "fa:16:3e:00:00:01"}
        if kind == "Instance":
            port = inputs["networks"][0]["port"]
            return {"accessIpV4": self.port_ips.get(port, ""), "powerState": "active"}
        if kind == "FloatingIp":
            named = str(inputs.get("description", "")).rsplit(": ", 1)[-1]
            return {"address": SSH_FLOATING_IPS.get(named, FLOATING_IP)}
        if kind == "PrivateKey":
            private, public = ed25519_pair()
            self.private_keys.append(private)
            return {"privateKeyOpenssh": private, "publicKeyOpenssh": public + "\n"}
        return {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        if args.token == "openstack:networking/getNetwork:getNetwork":
            return {"id": EXTERNAL_NETWORK_ID, "name": args.args.get("name"), "external": True}, []
        raise AssertionError(f"unexpected invoke {args.token}")


def ed25519_pair() -> tuple[str, str]:
    """A fresh key, as pulumi-tls's PrivateKey (ED25519) returns it: OpenSSH private and public text."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private.decode(), public.decode()


class RecordingMonitor(MockMonitor):
    """Keeps the resource options as the engine receives them; the mocks only see inputs."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.options: dict[tuple[str, str], tuple[str, bool, tuple[str, ...]]] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        secrets = tuple(request.additionalSecretOutputs)
        self.options[(request.type, request.name)] = (request.parent, bool(request.protect), secrets)
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


@dataclass
class MockRun:
    resources: list[Declared]
    outputs: dict[str, Any] = field(default_factory=dict)
    private_keys: list[str] = field(default_factory=list)  # every private key the mocked pulumi-tls made

    def of_kind(self, kind: str) -> list[Declared]:
        return [r for r in self.resources if r.kind == kind]

    def one(self, kind: str, name: str) -> Declared:
        found = [r for r in self.of_kind(kind) if r.name == name]
        assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
        return found[0]

    def by_id(self, resource_id: str) -> Declared:
        return next(r for r in self.resources if r.id == resource_id)


def _declared(mocks: RecordingMocks, monitor: RecordingMonitor) -> list[Declared]:
    found = []
    for (typ, name), (parent, protect, secrets) in monitor.options.items():
        if typ == "pulumi:pulumi:Stack":
            continue
        found.append(
            Declared(
                type=typ,
                name=name,
                id=mocks.ids.get((typ, name), ""),
                inputs=mocks.inputs.get((typ, name), {}),
                parent=parent,
                protect=protect,
                secret_outputs=secrets,
                secret_inputs=mocks.secret_inputs.get((typ, name), frozenset()),
            )
        )
    return found


def _run(raw_config: Mapping[str, str]) -> tuple[MockRun, Exception | None]:
    # A loop of its own: other tests (asyncio.run) leave the main thread without one, and Pulumi's
    # runtime asks for the current loop rather than making one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return _run_in_loop(raw_config)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _run_in_loop(raw_config: Mapping[str, str]) -> tuple[MockRun, Exception | None]:
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=STACK, preview=False, monitor=monitor)
    runtime_config.set_all_config({f"{PROJECT}:{key}": value for key, value in raw_config.items()})
    run = MockRun(resources=[])

    def program() -> pulumi.Output[None]:
        cluster: SwarmCluster = main()
        return pulumi.Output.all(cluster.inventory, cluster.ssh_config, cluster.known_hosts).apply(
            lambda values: run.outputs.update(inventory=values[0], ssh_config=values[1], known_hosts=values[2])
        )

    error: Exception | None = None
    try:
        pulumi.runtime.test(program)()  # type: ignore[no-untyped-call]
    except Exception as failure:  # handed to the caller, with what was declared before it
        error = failure
    finally:
        runtime_config.set_all_config({})
    run.resources = _declared(mocks, monitor)
    run.private_keys = mocks.private_keys
    return run, error


def run_program(raw_config: Mapping[str, str]) -> MockRun:
    """Run infra.program.main(), exactly what `pulumi up` runs, with this stack configuration."""
    run, error = _run(raw_config)
    if error is not None:
        raise error
    return run


def run_failing(raw_config: Mapping[str, str]) -> tuple[Exception, list[Declared]]:
    """Run a configuration that must fail: the error, and every resource declared before it."""
    run, error = _run(raw_config)
    assert error is not None, "the program ran without an error"
    return error, run.resources


def run_config(overrides: Mapping[str, str]) -> MockRun:
    return run_program({**BASE_CONFIG, **overrides})


def inventory_json(run: MockRun) -> str:
    return json.dumps(run.outputs["inventory"])
