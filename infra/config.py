"""The stack's configuration: read once, validated, typed. Every error names the key it is about.

Values arrive as Pulumi hands them to a program: strings (lists as JSON text when the stack file holds a
YAML list, or comma-separated when set on the command line). Parsing is pure so that tests can feed
it a dict; `from_pulumi` is the only place that touches the Pulumi runtime.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

from topology import MANAGER_COUNTS, WORKER_OFFSET

PROJECT = "swarmlab"
SERVER_GROUP_POLICIES = ("anti-affinity", "soft-anti-affinity")
# The nodes' fixed addresses (offsets, the same as the lab's) come from topology. Neutron hands
# addresses from POOL_OFFSET on to DHCP and router ports, so they never take a node's fixed IP.
POOL_OFFSET = 200
MAX_WORKERS = POOL_OFFSET - WORKER_OFFSET - 1
# admin_cidrs covering more than this share of the IPv4 space (0.0.0.0/1 + 128.0.0.0/1, a few /2s...)
# open SSH and the stats page to the world as surely as 0.0.0.0/0 does. A /8 is 0.4 %.
MAX_ADMIN_SHARE = 1 / 16

# Every key and its default (None: no default). Pulumi.example.yaml documents each of them.
DEFAULTS: dict[str, str | None] = {
    "cluster_name": None,  # the stack name
    "external_network": "public",
    "image": "debian-12",
    "flavor_manager": "m1.small",
    "flavor_worker": "m1.medium",
    "flavor_lb": "m1.small",
    "flavor_storage": "m1.small",
    "key_pair": None,
    "public_key": None,
    "ssh_user": "root",
    "ssh_private_key": "~/.ssh/id_ed25519",
    "manager_count": "3",
    "worker_count": "3",
    "private_cidr": "10.20.0.0/24",
    "dns_servers": "1.1.1.1,9.9.9.9",
    "availability_zones": "",
    "server_group_policy": "anti-affinity",
    "admin_cidrs": None,
    "public_cidrs": "0.0.0.0/0",
    "storage_size": "50",
    "storage_protect": "true",
    "storage_volume_type": None,
    "debian_mirror": "http://deb.debian.org/debian",
    "debian_suite": "bookworm",
}


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


@dataclass(frozen=True)
class InfraConfig:
    cluster_name: str
    external_network: str
    image: str
    flavors: Flavors
    key_pair: str | None
    public_key: str | None
    ssh_user: str
    ssh_private_key: str
    manager_count: int
    worker_count: int
    private_cidr: ipaddress.IPv4Network
    dns_servers: tuple[ipaddress.IPv4Address, ...]
    availability_zones: tuple[str, ...]
    server_group_policy: Literal["anti-affinity", "soft-anti-affinity"]
    admin_cidrs: tuple[ipaddress.IPv4Network, ...]
    public_cidrs: tuple[ipaddress.IPv4Network, ...]
    storage_size: int
    storage_protect: bool
    storage_volume_type: str | None
    debian_mirror: str
    debian_suite: str

    def address(self, offset: int) -> ipaddress.IPv4Address:
        return self.private_cidr.network_address + offset

    @property
    def allocation_pool(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return self.address(POOL_OFFSET), self.private_cidr.broadcast_address - 1


T = TypeVar("T")
GroupPolicy = Literal["anti-affinity", "soft-anti-affinity"]


class _Reader:
    """Reads keys from the raw mapping, collecting problems instead of stopping at the first."""

    def __init__(self, raw: Mapping[str, str | None]) -> None:
        self.raw = raw
        self.problems: list[Problem] = []

    def text(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None or value.strip() == "":
            return DEFAULTS[key]
        return value.strip()

    def fail(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, self.text(key), message))

    def parse(self, key: str, convert: Callable[[str], T], fallback: T) -> T:
        value = self.text(key)
        if value is None:
            return fallback
        try:
            return convert(value)
        except ValueError as error:
            self.fail(key, str(error))
            return fallback

    def required(self, key: str, hint: str) -> str:
        value = self.text(key)
        if value is None:
            self.problems.append(Problem(key, None, f"is required: {hint}"))
            return ""
        return value


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


def _one_of(values: tuple[int, ...]) -> str:
    """(1, 3, 5, 7) -> '1, 3, 5 or 7'."""
    *first, last = (str(v) for v in values)
    return f"{', '.join(first)} or {last}" if first else last


def _check_counts(read: _Reader, managers: int, workers: int) -> None:
    if managers not in MANAGER_COUNTS:
        read.fail("manager_count", f"must be odd ({_one_of(MANAGER_COUNTS)}) to keep a Raft majority")
    if workers < 1:
        read.fail("worker_count", "must be at least 1: managers are drained, the services run on workers")
    elif workers > MAX_WORKERS:
        read.fail("worker_count", f"must be at most {MAX_WORKERS}: worker addresses stop below the DHCP pool")


def _check_cidrs(
    read: _Reader,
    cidr: ipaddress.IPv4Network,
    admin: tuple[ipaddress.IPv4Network, ...] | None,
    public: tuple[ipaddress.IPv4Network, ...] | None,
) -> None:
    """admin or public is None when it is unset or did not parse: that problem is reported already."""
    if cidr.prefixlen > 24:
        read.fail("private_cidr", "must be a /24 or larger: nodes sit at fixed offsets up to .254")
    if admin is not None and not admin:
        read.fail("admin_cidrs", "must list at least one CIDR: nobody could reach SSH or the HAProxy stats")
    if admin and any(net.prefixlen == 0 for net in admin):
        read.fail("admin_cidrs", "must not contain 0.0.0.0/0: SSH and HAProxy stats stay closed to the world")
    elif admin and _share_of_internet(admin) > MAX_ADMIN_SHARE:
        read.fail(
            "admin_cidrs",
            f"together cover {_share_of_internet(admin):.0%} of all IPv4 addresses: that is the whole Internet "
            "in all but name; list the networks you administer from",
        )
    if public is not None and not public:
        read.fail("public_cidrs", "must list at least one CIDR (0.0.0.0/0 for everyone)")


def _share_of_internet(networks: tuple[ipaddress.IPv4Network, ...]) -> float:
    """The share of the IPv4 space the networks cover together (overlaps counted once)."""
    return sum(n.num_addresses for n in ipaddress.collapse_addresses(networks)) / 2**32


def _choice(read: _Reader, key: str, choices: tuple[str, ...]) -> str:
    value = read.text(key) or choices[0]
    if value not in choices:
        read.fail(key, f"must be one of {', '.join(choices)}")
        return choices[0]
    return value


def _cluster_name(read: _Reader, stack: str) -> str:
    name = read.text("cluster_name") or stack
    if not name or not name[0].isalpha() or not name.replace("-", "").isalnum() or len(name) > 30:
        read.problems.append(
            Problem("cluster_name", name, "must start with a letter and hold only letters, digits and '-' (max 30)")
        )
    return name


def _key(read: _Reader) -> tuple[str | None, str | None]:
    key_pair, public_key = read.text("key_pair"), read.text("public_key")
    if (key_pair is None) == (public_key is None):
        read.problems.append(
            Problem(
                "key_pair", key_pair, "set exactly one of key_pair (an existing key pair) or public_key (to upload)"
            )
        )
    return key_pair, public_key


def parse_config(raw: Mapping[str, str | None], stack: str, unknown: Iterable[str] = ()) -> InfraConfig:
    """Validate every key; raise InfraConfigError listing every problem, before any resource exists."""
    read = _Reader(raw)
    read.problems.extend(Problem(key, None, "is not a known key (see Pulumi.example.yaml)") for key in unknown)
    managers = read.parse("manager_count", _integer, 3)
    workers = read.parse("worker_count", _integer, 3)
    _check_counts(read, managers, workers)
    cidr = read.parse("private_cidr", _network, ipaddress.IPv4Network("10.20.0.0/24"))
    admin = read.parse("admin_cidrs", _networks, None)
    read.required("admin_cidrs", "the CIDRs allowed to SSH to the lb node and see HAProxy stats, e.g. 203.0.113.7/32")
    public = read.parse("public_cidrs", _networks, None)
    _check_cidrs(read, cidr, admin, public)
    size = read.parse("storage_size", _integer, 50)
    if size < 1:
        read.fail("storage_size", "must be at least 1 (GiB)")
    key_pair, public_key = _key(read)
    config = InfraConfig(
        cluster_name=_cluster_name(read, stack),
        external_network=read.required("external_network", "the name of the cloud's external network"),
        image=read.required("image", "a Debian 12 image name"),
        flavors=Flavors(
            manager=read.required("flavor_manager", "a flavor name"),
            worker=read.required("flavor_worker", "a flavor name"),
            lb=read.required("flavor_lb", "a flavor name"),
            storage=read.required("flavor_storage", "a flavor name"),
        ),
        key_pair=key_pair,
        public_key=public_key,
        ssh_user=read.required("ssh_user", "the user Fabric logs in as"),
        ssh_private_key=read.required("ssh_private_key", "the path of the private key on your machine"),
        manager_count=managers,
        worker_count=workers,
        private_cidr=cidr,
        dns_servers=read.parse("dns_servers", _addresses, ()),
        availability_zones=tuple(read.parse("availability_zones", _items, [])),
        server_group_policy=cast(GroupPolicy, _choice(read, "server_group_policy", SERVER_GROUP_POLICIES)),
        admin_cidrs=admin or (),
        public_cidrs=public or (),
        storage_size=size,
        storage_protect=read.parse("storage_protect", _boolean, True),
        storage_volume_type=read.text("storage_volume_type"),
        debian_mirror=read.required("debian_mirror", "a Debian mirror URL"),
        debian_suite=read.required("debian_suite", "a Debian suite such as bookworm"),
    )
    if read.problems:
        raise InfraConfigError(read.problems)
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
