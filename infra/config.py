"""The stack's configuration: one pydantic model, read once, validated before any resource is declared.
Every problem names the key, its value and what to write instead; all of them are reported at once.

Values arrive as Pulumi hands them to a program: strings (lists as JSON text when the stack file holds a
YAML list, or comma-separated when set on the command line). So each field is parsed from that text,
and its default is written as the stack file writes it (Pulumi.example.yaml documents every key).
Parsing is pure so that tests can feed it a dict; `from_pulumi` is the only place that touches the
Pulumi runtime. No key is a secret: the secrets of a stack (host keys, user data) are Outputs made by
the program, never configuration.

infra/ imports nothing of cluster/, so this mirrors cluster/config.py's way (pydantic, cross-key
checks carrying their key and value in the error's context) with its own small error types.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from topology import WORKER_OFFSET, lb_count_problem, manager_count_problem, vip_address

PROJECT = "swarmlab"
SERVER_GROUP_POLICIES = ("anti-affinity", "soft-anti-affinity")
GroupPolicy = Literal["anti-affinity", "soft-anti-affinity"]
# The nodes' fixed addresses (offsets, the same as the lab's) come from topology. Neutron hands
# addresses from POOL_OFFSET on to DHCP and router ports, so they never take a node's fixed IP.
POOL_OFFSET = 200
MAX_WORKERS = POOL_OFFSET - WORKER_OFFSET - 1
# admin_cidrs covering more than this share of the IPv4 space (0.0.0.0/1 + 128.0.0.0/1, a few /2s...)
# open SSH and the stats page to the world as surely as 0.0.0.0/0 does. A /8 is 0.4 %.
MAX_ADMIN_SHARE = 1 / 16
FLAVOR = "a flavor name"


@dataclass(frozen=True)
class Problem:
    key: str
    value: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}: {self.message}" if self.value is not None else f"{self.key}: {self.message}"


class InfraConfigError(ValueError):
    """All problems of a configuration at once, so one `pulumi up` shows everything to fix."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid stack configuration ({PROJECT}:<key>):\n{lines}")


@dataclass(frozen=True)
class Flavors:
    manager: str
    worker: str
    lb: str
    storage: str

    def of(self, role: str) -> str:
        return {"manager": self.manager, "worker": self.worker, "lb": self.lb, "storage": self.storage}[role]


def _about(key: str, value: str | None, message: str) -> PydanticCustomError:
    """A problem found while checking another key: it carries the key and value it is about."""
    return PydanticCustomError("swarmlab_infra", message, {"key": key, "value": value})


def _items(value: str) -> list[str]:
    """A list key: JSON (a YAML list in the stack file) or comma-separated (`pulumi config set`)."""
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("is neither a JSON list nor comma-separated") from None
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise ValueError("must be a list of strings")
        return [item.strip() for item in parsed if item.strip()]
    return [item.strip() for item in value.split(",") if item.strip()]


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _boolean(value: str) -> bool:
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise ValueError("must be true or false")


def _network(value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value)
    except ipaddress.NetmaskValueError:
        raise ValueError("is not an IPv4 CIDR such as 10.20.0.0/24") from None
    except ValueError as error:
        if "host bits set" in str(error):
            fixed = ipaddress.IPv4Network(value, strict=False)
            raise ValueError(f"has host bits set; use {fixed}") from None
        raise ValueError("is not an IPv4 CIDR such as 10.20.0.0/24") from None


def _networks(value: str) -> tuple[ipaddress.IPv4Network, ...]:
    # dict.fromkeys: drop repeats, keep the order (each CIDR becomes one security-group rule).
    return tuple(dict.fromkeys(_network(item) for item in _items(value)))


def _addresses(value: str) -> tuple[ipaddress.IPv4Address, ...]:
    try:
        return tuple(ipaddress.IPv4Address(item) for item in _items(value))
    except ValueError:
        raise ValueError("must be IPv4 addresses such as 1.1.1.1") from None


def _share_of_internet(networks: tuple[ipaddress.IPv4Network, ...]) -> float:
    """The share of the IPv4 space the networks cover together (overlaps counted once)."""
    return sum(n.num_addresses for n in ipaddress.collapse_addresses(networks)) / 2**32


# Every key and its default, as the stack file writes it: parsed as a value set by hand is (None: no
# default). Pulumi.example.yaml documents each of them.
DEFAULTS: dict[str, str | None] = {
    "manager_count": "3",
    "worker_count": "3",
    "lb_count": "1",
    "private_cidr": "10.20.0.0/24",
    "admin_cidrs": None,
    "public_cidrs": "0.0.0.0/0",
    "storage_size": "50",
    "key_pair": None,
    "public_key": None,
    "cluster_name": None,  # the stack name
    "external_network": "public",
    "image": "debian-12",
    "flavor_manager": "m1.small",
    "flavor_worker": "m1.medium",
    "flavor_lb": "m1.small",
    "flavor_storage": "m1.small",
    "ssh_user": "root",
    "ssh_private_key": "~/.ssh/id_ed25519",
    "dns_servers": "1.1.1.1,9.9.9.9",
    "availability_zones": "",
    "server_group_policy": "anti-affinity",
    "storage_protect": "true",
    "overlay_encryption": "true",
    "storage_volume_type": None,
    "debian_mirror": "http://deb.debian.org/debian",
    "debian_suite": "bookworm",
}


class InfraConfig(BaseModel):
    """Every key of the stack, typed. Fields are checked in this order, and their problems listed in it.

    parse_config gives every key a value: what the stack sets, else its text in DEFAULTS, else the stack's
    name for cluster_name. Only the keys that may stay unset have a default here (None); a key with
    neither is required, and its description says what to set.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    manager_count: int = Field(description="the number of managers")
    worker_count: int = Field(description="the number of workers")
    lb_count: int = Field(description="the number of lb (HAProxy) nodes: 1, or 2 sharing a virtual IP")
    private_cidr: ipaddress.IPv4Network = Field(description="the private network of the nodes")
    admin_cidrs: tuple[ipaddress.IPv4Network, ...] = Field(
        description="the CIDRs allowed to SSH to the lb node and see HAProxy stats, e.g. 203.0.113.7/32"
    )
    public_cidrs: tuple[ipaddress.IPv4Network, ...] = Field(description="who may reach HTTP(S)")
    storage_size: int = Field(description="the storage volume's size, GiB")
    key_pair: str | None = Field(None, description="an existing key pair's name")
    public_key: str | None = Field(None, description="a public key to upload as a new key pair")
    cluster_name: str = Field(description="the cluster's name (default: the stack's)")
    external_network: str = Field(description="the name of the cloud's external network")
    image: str = Field(description="a Debian 12 image name")
    flavor_manager: str = Field(description=FLAVOR)
    flavor_worker: str = Field(description=FLAVOR)
    flavor_lb: str = Field(description=FLAVOR)
    flavor_storage: str = Field(description=FLAVOR)
    ssh_user: str = Field(description="the user Fabric logs in as")
    ssh_private_key: str = Field(description="the path of the private key on your machine")
    dns_servers: tuple[ipaddress.IPv4Address, ...] = Field(description="the nodes' DNS servers")
    availability_zones: tuple[str, ...] = Field(description="zones to spread the servers over")
    server_group_policy: GroupPolicy = Field(description="how servers of a role spread")
    storage_protect: bool = Field(description="whether `pulumi destroy` must keep the volume")
    overlay_encryption: bool = Field(
        description="whether the workers may exchange ESP (IPsec): the stack's encrypted overlays need it"
    )
    storage_volume_type: str | None = Field(None, description="the Cinder volume type (unset: the cloud's)")
    debian_mirror: str = Field(description="a Debian mirror URL")
    debian_suite: str = Field(description="a Debian suite such as bookworm")

    # --- parsing Pulumi's text (a ValueError's message is the problem) ---

    @field_validator("manager_count", "worker_count", "lb_count", "storage_size", mode="before")
    @classmethod
    def _whole_number(cls, value: str) -> int:
        return _integer(value)

    @field_validator("private_cidr", mode="before")
    @classmethod
    def _cidr(cls, value: str) -> ipaddress.IPv4Network:
        network = _network(value)
        if network.prefixlen > 24:
            raise ValueError("must be a /24 or larger: nodes sit at fixed offsets up to .254")
        return network

    @field_validator("admin_cidrs", "public_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: str) -> tuple[ipaddress.IPv4Network, ...]:
        return _networks(value)

    @field_validator("dns_servers", mode="before")
    @classmethod
    def _dns(cls, value: str) -> tuple[ipaddress.IPv4Address, ...]:
        return _addresses(value)

    @field_validator("availability_zones", mode="before")
    @classmethod
    def _zones(cls, value: str) -> tuple[str, ...]:
        return tuple(_items(value))

    @field_validator("storage_protect", "overlay_encryption", mode="before")
    @classmethod
    def _flag(cls, value: str) -> bool:
        return _boolean(value)

    @field_validator("server_group_policy", mode="before")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value not in SERVER_GROUP_POLICIES:
            raise ValueError(f"must be one of {', '.join(SERVER_GROUP_POLICIES)}")
        return value

    # --- rules ---

    @field_validator("manager_count")
    @classmethod
    def _odd_managers(cls, value: int) -> int:
        if (managers_problem := manager_count_problem(value)) is not None:
            raise ValueError(managers_problem)
        return value

    @field_validator("worker_count")
    @classmethod
    def _workers_fit(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1: managers are drained, the services run on workers")
        if value > MAX_WORKERS:
            raise ValueError(f"must be at most {MAX_WORKERS}: worker addresses stop below the DHCP pool")
        return value

    @field_validator("lb_count")
    @classmethod
    def _lbs(cls, value: int) -> int:
        if (lb_problem := lb_count_problem(value)) is not None:
            raise ValueError(lb_problem)
        return value

    @field_validator("admin_cidrs")
    @classmethod
    def _admin_networks(cls, value: tuple[ipaddress.IPv4Network, ...]) -> tuple[ipaddress.IPv4Network, ...]:
        if not value:
            raise ValueError("must list at least one CIDR: nobody could reach SSH or the HAProxy stats")
        if any(net.prefixlen == 0 for net in value):
            raise ValueError("must not contain 0.0.0.0/0: SSH and HAProxy stats stay closed to the world")
        share = _share_of_internet(value)
        if share > MAX_ADMIN_SHARE:
            raise ValueError(
                f"together cover {share:.0%} of all IPv4 addresses: that is the whole Internet in all but name; "
                "list the networks you administer from"
            )
        return value

    @field_validator("public_cidrs")
    @classmethod
    def _public_networks(cls, value: tuple[ipaddress.IPv4Network, ...]) -> tuple[ipaddress.IPv4Network, ...]:
        if not value:
            raise ValueError("must list at least one CIDR (0.0.0.0/0 for everyone)")
        return value

    @field_validator("storage_size")
    @classmethod
    def _some_storage(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1 (GiB)")
        return value

    @field_validator("public_key")
    @classmethod
    def _one_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Checked with the later of the two keys, so that it runs whatever else is wrong.
        key_pair = info.data.get("key_pair")
        if (key_pair is None) == (value is None):
            raise _about(
                "key_pair", key_pair, "set exactly one of key_pair (an existing key pair) or public_key (to upload)"
            )
        return value

    @field_validator("cluster_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not value[0].isalpha() or not value.replace("-", "").isalnum() or len(value) > 30:
            raise ValueError("must start with a letter and hold only letters, digits and '-' (max 30)")
        return value

    # --- derived values ---

    @property
    def flavors(self) -> Flavors:
        return Flavors(self.flavor_manager, self.flavor_worker, self.flavor_lb, self.flavor_storage)

    def address(self, offset: int) -> ipaddress.IPv4Address:
        return self.private_cidr.network_address + offset

    @property
    def vip(self) -> str | None:
        """The virtual IP two lbs share (a port of its own, the floating IP's target); None with one lb."""
        return vip_address(self.private_cidr) if self.lb_count == 2 else None

    @property
    def allocation_pool(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return self.address(POOL_OFFSET), self.private_cidr.broadcast_address - 1


def _problem(error: ErrorDetails) -> Problem:
    context: dict[str, Any] = dict(error.get("ctx") or {})
    key = str(context.get("key") or ".".join(str(part) for part in error["loc"]))
    if error["type"] == "extra_forbidden":
        return Problem(key, None, "is not a known key (see Pulumi.example.yaml)")
    if error["type"] == "missing":
        return Problem(key, None, f"is required: {InfraConfig.model_fields[key].description}")
    value = context["value"] if "key" in context else error.get("input")
    return Problem(key, None if value is None else str(value), error["msg"].removeprefix("Value error, "))


def parse_config(raw: Mapping[str, str | None], stack: str, unknown: Iterable[str] = ()) -> InfraConfig:
    """Validate every key; raise InfraConfigError listing every problem, before any resource exists.

    A key that is unset or blank takes its default."""
    problems = [Problem(key, None, "is not a known key (see Pulumi.example.yaml)") for key in unknown]
    given = {key: default for key, default in DEFAULTS.items() if default is not None}
    given |= {key: value.strip() for key, value in raw.items() if value is not None and value.strip()}
    given.setdefault("cluster_name", stack)
    try:
        config = InfraConfig.model_validate(given)
    except ValidationError as error:
        problems += [_problem(item) for item in error.errors()]
        raise InfraConfigError(problems) from None
    if problems:
        raise InfraConfigError(problems)
    return config


def unknown_keys(full_keys: Iterable[str]) -> list[str]:
    """Keys of this project's namespace that the program does not know: usually a typo."""
    prefix = f"{PROJECT}:"
    return sorted(
        k.removeprefix(prefix) for k in full_keys if k.startswith(prefix) and k[len(prefix) :] not in DEFAULTS
    )


def from_pulumi() -> InfraConfig:
    """The stack's configuration, read once from the Pulumi runtime."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    bag = pulumi.Config(PROJECT)
    raw = {key: bag.get(key) for key in DEFAULTS}
    # Config set by the CLI arrives in the runtime's map (or in PULUMI_CONFIG before the runtime reads it).
    present = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return parse_config(raw, pulumi.get_stack(), unknown_keys(present))
