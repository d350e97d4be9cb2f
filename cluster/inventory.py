"""Inventory schema v1: the only bridge between whatever made the machines and the Fabric tasks.

Written by the lab, by the Pulumi program (stack output `inventory`) or by hand (`provider: static`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

import topology
from cluster.errors import ConfigError, ConfigErrors, problem
from cluster.state import CLUSTER_NAME

SCHEMA_VERSION = 1

# Names and endpoints go into commands run as root on the nodes (hostnames, docker node names, the
# registry's certificate directory, mount options): only what such a name may hold gets in.
NODE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # one RFC 1123 label
HOST_NAME = re.compile(r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
EXPORT_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _host_port(value: str, example: str) -> str:
    """`host:port` with an IPv4 address or a DNS name and a port 1-65535, else a problem naming the fix."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not HOST_NAME.fullmatch(host):
        raise problem("is not host:port (an IPv4 address or DNS name, and a port)", f"write it as {example}")
    return value


class Role(StrEnum):
    MANAGER = "manager"
    WORKER = "worker"
    LB = "lb"
    STORAGE = "storage"


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    private_ip: ipaddress.IPv4Address
    public_ip: ipaddress.IPv4Address | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NODE_NAME.fullmatch(value):
            raise problem(
                "is not a host name: ASCII letters, digits and '-' only, not at either end, at most 63",
                "name the node like worker-1 (it becomes the hostname and the swarm's node name)",
            )
        return value


class SshSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = "root"
    private_key: str
    jump_host: str | None = None
    port: int = 22
    # Where the jump host is reached from the operator's machine; the lab publishes it on loopback.
    jump_port: int | None = None
    # Pinned host keys, one way or both: a known_hosts file on this machine, and/or each node's public
    # host key ("ssh-ed25519 AAAA...") by node name, as a cloud's inventory carries them. Required:
    # the runner trusts no key on first use.
    known_hosts: str | None = None
    host_keys: dict[str, str] = Field(default_factory=dict)

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not SSH_USER.fullmatch(value):
            raise problem("is not a user name", "write a login name such as root or debian")
        return value

    @field_validator("host_keys")
    @classmethod
    def _public_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for name, key in value.items():
            parts = key.split()
            if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")) or not _is_base64(parts[1]):
                raise problem(
                    f"the key of {name} is not an OpenSSH public key",
                    "write it as in a .pub file: ssh-ed25519 AAAA...",
                    key=f"ssh.host_keys.{name}",
                    value=key[:40],
                )
        return value


class Network(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cidr: ipaddress.IPv4Network
    # The virtual IP two lb nodes share (keepalived moves it); none with one lb.
    vip: ipaddress.IPv4Address | None = None

    @model_serializer(mode="wrap")
    def _without_absent_vip(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An inventory of one lb is written exactly as before the key existed.
        data: dict[str, Any] = handler(self)
        if self.vip is None:
            data.pop("vip", None)
        return data


class NfsExport(BaseModel):
    """Where the stack's NFS volumes mount from: `host:/path`, as mount(8) writes it."""

    model_config = ConfigDict(frozen=True)

    host: str
    path: str

    def __str__(self) -> str:
        return f"{self.host}:{self.path}"


class Endpoints(BaseModel):
    """What the cluster serves and where. Typed: the deployer mounts exactly the NFS export named here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    http: str
    stats: str | None = None
    registry: str | None = None  # host:port of the cluster's image registry (default: the storage node's)
    nfs: str | None = None  # host:/path of the NFS export (default: the storage node's)

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        # It names a directory under /etc/docker/certs.d and goes into docker commands as root.
        return None if value is None else _host_port(value, "10.20.0.6:5000 or registry.example.org:5000")

    @field_validator("nfs")
    @classmethod
    def _host_and_path(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, path = value.partition(":")
            if not HOST_NAME.fullmatch(host) or not sep or not EXPORT_PATH.fullmatch(path):
                raise problem(
                    "is not host:/path (a host name or IPv4 address; a path of letters, digits and ._/-)",
                    "write it as mount(8) does, e.g. 10.20.0.6:/data",
                )
        return value


class Inventory(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    cluster: str  # it names the state directory and the nodes' labels: no path or shell word may hide in it
    provider: Literal["lab", "openstack", "static"]
    ssh: SshSettings
    network: Network
    nodes: tuple[Node, ...]
    endpoints: Endpoints

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if not CLUSTER_NAME.fullmatch(value):
            raise problem(
                "is not a cluster name: ASCII letters, digits and '-', not starting with '-', at most 30",
                "use the name in swarmlab.yaml, such as demo",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Inventory:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise problem("names must be unique", "give every node its own name", key="nodes", value=names)
        for node in self.nodes:
            if node.private_ip not in self.network.cidr:
                raise problem(
                    f"is outside {self.network.cidr}",
                    "fix the address or network.cidr",
                    key=f"nodes.{node.name}.private_ip",
                    value=str(node.private_ip),
                )
        managers = len(self.by_role(Role.MANAGER))
        if (managers_problem := topology.manager_count_problem(managers)) is not None:
            raise problem(
                f"{managers} managers: {managers_problem}",
                "list an odd number of manager nodes",
                key="nodes",
                value=managers,
            )
        if not self.by_role(Role.WORKER):
            raise problem("no worker: the services need at least one", "add a worker node", key="nodes", value=0)
        self._lbs_and_vip(names)
        if self.ssh.jump_host is not None and self.ssh.jump_host not in names:
            raise problem(
                "is not a node name", "name the lb node, or null", key="ssh.jump_host", value=self.ssh.jump_host
            )
        strangers = sorted(set(self.ssh.host_keys) - set(names))
        if strangers:
            raise problem(
                "names no node", "key host_keys by node name", key="ssh.host_keys", value=", ".join(strangers)
            )
        return self

    def _lbs_and_vip(self, names: list[str]) -> None:
        lbs = len(self.by_role(Role.LB))
        if (lb_problem := topology.lb_count_problem(lbs)) is not None:
            raise problem(
                f"{lbs} lb nodes: {lb_problem}", "list one or two nodes with role lb", key="nodes", value=names
            )
        vip = self.network.vip
        if lbs == 2 and vip is None:
            raise problem(
                "two lb nodes share a virtual IP, and none is given",
                f"set network.vip to a free address of {self.network.cidr}, "
                f"such as {topology.vip_address(self.network.cidr)}",
                key="network.vip",
                value=None,
            )
        if lbs == 1 and vip is not None:
            raise problem(
                "a virtual IP needs two lb nodes to move between",
                "remove network.vip, or list a second lb node",
                key="network.vip",
                value=str(vip),
            )
        if vip is not None and vip not in self.network.cidr:
            raise problem(
                f"is outside {self.network.cidr}",
                "pick a free address of the network",
                key="network.vip",
                value=str(vip),
            )
        taken = [n.name for n in self.nodes if n.private_ip == vip]
        if taken:
            raise problem(
                f"is {taken[0]}'s own address: keepalived would add it to a node that already has it",
                "pick an address no node has",
                key="network.vip",
                value=str(vip),
            )

    def by_role(self, role: Role) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == role)

    def node(self, name: str) -> Node:
        for candidate in self.nodes:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    @property
    def managers(self) -> tuple[Node, ...]:
        return self.by_role(Role.MANAGER)

    @property
    def workers(self) -> tuple[Node, ...]:
        return self.by_role(Role.WORKER)

    @property
    def swarm_nodes(self) -> tuple[Node, ...]:
        return self.managers + self.workers

    @property
    def lb(self) -> Node:
        """The first lb node (lb-1): the jump host (with two lbs the runner goes through lb-2 when lb-2
        answers at the shared address); HAProxy and the exporter's scrape run on every one of `lbs`."""
        return self.by_role(Role.LB)[0]

    @property
    def lbs(self) -> tuple[Node, ...]:
        """Every lb node: one, or two sharing `network.vip`."""
        return self.by_role(Role.LB)

    @property
    def lb_pair(self) -> bool:
        """Two lbs sharing `network.vip` (validated above: a pair always has one), held by keepalived."""
        return len(self.lbs) == 2

    @property
    def lb_addresses(self) -> tuple[str, ...]:
        """Every lb's private address: where HAProxy's requests to the services come from."""
        return tuple(str(n.private_ip) for n in self.lbs)

    @property
    def storage(self) -> Node | None:
        found = self.by_role(Role.STORAGE)
        return found[0] if found else None

    @property
    def registry(self) -> str | None:
        """The registry every engine pulls from: the declared endpoint, else the storage node's."""
        if self.endpoints.registry:
            return self.endpoints.registry
        return f"{self.storage.private_ip}:{topology.REGISTRY_PORT}" if self.storage else None

    @property
    def nfs(self) -> NfsExport | None:
        """The NFS export the stack mounts: the declared endpoint, else the storage node's export."""
        if self.endpoints.nfs:
            host, _, path = self.endpoints.nfs.partition(":")
            return NfsExport(host=host, path=path)
        return NfsExport(host=str(self.storage.private_ip), path=topology.NFS_PSEUDO_PATH) if self.storage else None


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except binascii.Error:
        return False
    return True


def parse_inventory(text: str, source: str = "inventory") -> Inventory:
    """Parse and validate; every problem names the key and the source it came from."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigErrors([ConfigError(source, "", f"is not JSON ({error})", "fix the file")]) from None
    try:
        return Inventory.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            context = dict(item.get("ctx") or {})
            key = str(context.get("key") or ".".join(str(p) for p in item["loc"]))
            fix = str(context.get("fix") or "see the schema in docs/lab.md")
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(ConfigError(f"{source}: {key}", context.get("value", item.get("input", "")), message, fix))
        raise ConfigErrors(problems) from None


def load_inventory(path: Path) -> Inventory:
    if not path.exists():
        raise ConfigErrors([ConfigError("target", str(path), "inventory file does not exist", "give a path")])
    return parse_inventory(path.read_text(), str(path))


def dump_inventory(inventory: Inventory) -> str:
    return inventory.model_dump_json(indent=2, exclude_none=False) + "\n"
