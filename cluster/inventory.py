"""Inventory schema v1: the only bridge between whatever made the machines and the Fabric tasks.

Written by the lab, by the Pulumi program (stack output `inventory`) or by hand (`provider: static`).
"""

from __future__ import annotations

import ipaddress
import json
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from cluster.errors import ConfigError, ConfigErrors

SCHEMA_VERSION = 1


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


class SshSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = "root"
    private_key: str
    jump_host: str | None = None
    port: int = 22
    # Where the jump host is reached from the operator's machine; the lab publishes it on loopback.
    jump_port: int | None = None
    known_hosts: str | None = None


class Network(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cidr: ipaddress.IPv4Network


class Inventory(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    cluster: str
    provider: Literal["lab", "openstack", "static"]
    ssh: SshSettings
    network: Network
    nodes: tuple[Node, ...]
    endpoints: dict[str, str]

    @model_validator(mode="after")
    def _consistent(self) -> Inventory:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("nodes|names must be unique")
        for node in self.nodes:
            if node.private_ip not in self.network.cidr:
                raise ValueError(f"nodes.{node.name}.private_ip|{node.private_ip} is outside {self.network.cidr}")
        managers = len(self.by_role(Role.MANAGER))
        if managers not in (1, 3, 5, 7):
            raise ValueError(f"nodes|{managers} managers: need 1, 3, 5 or 7 for a Raft majority")
        if not self.by_role(Role.WORKER):
            raise ValueError("nodes|no worker: the services need at least one")
        if len(self.by_role(Role.LB)) != 1:
            raise ValueError("nodes|need exactly one lb node")
        if self.ssh.jump_host is not None and self.ssh.jump_host not in names:
            raise ValueError(f"ssh.jump_host|{self.ssh.jump_host} is not a node name")
        return self

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
        return self.by_role(Role.LB)[0]

    @property
    def storage(self) -> Node | None:
        found = self.by_role(Role.STORAGE)
        return found[0] if found else None


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
            message = str(item["msg"]).removeprefix("Value error, ")
            key, _, problem = (
                message.partition("|")
                if "|" in message
                else (
                    ".".join(str(p) for p in item["loc"]),
                    "",
                    message,
                )
            )
            problems.append(
                ConfigError(f"{source}: {key}", item.get("input", ""), problem, "see the schema in README.md")
            )
        raise ConfigErrors(problems) from None


def load_inventory(path: Path) -> Inventory:
    if not path.exists():
        raise ConfigErrors([ConfigError("target", str(path), "inventory file does not exist", "give a path")])
    return parse_inventory(path.read_text(), str(path))


def dump_inventory(inventory: Inventory) -> str:
    return inventory.model_dump_json(indent=2, exclude_none=False) + "\n"
