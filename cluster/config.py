"""The lab and cluster configuration: one typed object, read once, validated before anything runs.

Sources, later ones winning: built-in defaults, the YAML file (`swarmlab.yaml`, or the path in
SWARMLAB_CONFIG), then environment variables SWARMLAB_<KEY> (for example SWARMLAB_WORKERS=2).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster.errors import ConfigError, ConfigErrors

DEFAULT_CONFIG_FILE = "swarmlab.yaml"
ENV_PREFIX = "SWARMLAB_"
MANAGER_COUNTS = (1, 3, 5, 7)
# Host offsets inside the node network; .1 is the bridge gateway.
LB_OFFSET, STORAGE_OFFSET, MANAGER_OFFSET, WORKER_OFFSET = 5, 6, 10, 20


class Config(BaseModel):
    """Every key a user may set. Field descriptions are the documentation of the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster: str = Field("demo", description="cluster name; labels, network and state dir derive from it")
    managers: int = Field(3, description="manager count: 1, 3, 5 or 7 (an odd Raft majority)")
    workers: int = Field(3, description="worker count, at least 1")
    cidr: ipaddress.IPv4Network = Field(
        ipaddress.IPv4Network("10.20.0.0/24"), description="private network of the nodes"
    )
    overlay_pool: ipaddress.IPv4Network = Field(
        ipaddress.IPv4Network("10.128.0.0/16"),
        description="address pool Swarm carves overlay networks from (--default-addr-pool)",
    )
    bind_address: ipaddress.IPv4Address = Field(
        ipaddress.IPv4Address("127.0.0.1"), description="host address the lab's lb node is published on"
    )
    http_port: int = Field(8080, description="host port of HAProxy's HTTP frontend (lab)")
    ssh_port: int = Field(2222, description="host port of the lb node's SSH, the jump host (lab)")
    stats_port: int = Field(8404, description="host port of HAProxy's stats page (lab)")
    debian_mirror: str = Field("http://deb.debian.org/debian", description="Debian mirror for images")
    debian_suite: str = Field("bookworm", description="Debian release the images are built from")
    stack: str = Field("registration", description="stack deploy-stack deploys: registration or hello")
    environment: str = Field("lab", description="values file of the stack: values/<stack>/<environment>.yaml")
    state_dir: Path | None = Field(
        None, description="where lab keys, inventory and credentials live (default ~/.local/state/swarmlab)"
    )

    @field_validator("cluster")
    @classmethod
    def _cluster_name(cls, value: str) -> str:
        if not value or not value.replace("-", "").isalnum() or not value[0].isalpha() or len(value) > 30:
            raise ValueError(
                "must start with a letter and hold only letters, digits and '-', at most 30 characters"
                "|use a name such as 'demo' or 'course-2026'"
            )
        return value

    @field_validator("managers")
    @classmethod
    def _odd_managers(cls, value: int) -> int:
        if value not in MANAGER_COUNTS:
            raise ValueError(
                "must be 1, 3, 5 or 7: Raft needs an odd number of managers to keep a majority"
                f"|set managers to {max(c for c in MANAGER_COUNTS if c <= max(value, 1))}"
            )
        return value

    @field_validator("workers")
    @classmethod
    def _some_workers(cls, value: int) -> int:
        if value < 1:
            raise ValueError("managers are drained, so the services need at least one worker|set workers >= 1")
        return value

    @field_validator("cidr", "overlay_pool")
    @classmethod
    def _private(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not value.is_private:
            raise ValueError("must be a private (RFC 1918) range|use e.g. 10.20.0.0/24")
        return value

    @field_validator("http_port", "ssh_port", "stats_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1024 <= value <= 65535:
            raise ValueError("must be an unprivileged port, 1024-65535|pick a free port such as 8080")
        return value

    @model_validator(mode="after")
    def _fits(self) -> Config:
        needed = WORKER_OFFSET + self.workers + 1
        if self.cidr.num_addresses < needed:
            raise ValueError(
                f"cidr|{self.cidr}|holds {self.cidr.num_addresses} addresses but {self.workers} workers need "
                f"{needed}|use a larger network such as a /24"
            )
        if self.cidr.overlaps(self.overlay_pool):
            raise ValueError(
                f"overlay_pool|{self.overlay_pool}|overlaps cidr {self.cidr}: overlay traffic would be routed "
                "onto the node network|choose disjoint ranges, e.g. cidr 10.20.0.0/24 and overlay_pool "
                "10.128.0.0/16"
            )
        ports = [self.http_port, self.ssh_port, self.stats_port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"http_port|{ports}|http_port, ssh_port and stats_port must differ|give each its own port")
        return self

    # Derived values: computed, never stored, so they cannot disagree with the keys.
    def address(self, offset: int) -> str:
        return str(self.cidr.network_address + offset)

    @property
    def state_root(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir.expanduser()
        return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "swarmlab"

    @property
    def state_path(self) -> Path:
        return self.state_root / self.cluster


def _env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    keys = set(Config.model_fields)
    overrides: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and name != "SWARMLAB_CONFIG":
            key = name[len(ENV_PREFIX) :].lower()
            if key not in keys:
                raise ConfigErrors(
                    [ConfigError(name, value, "is not a configuration key", f"use one of SWARMLAB_{_keys()}")]
                )
            overrides[key] = value
    return overrides


def _keys() -> str:
    return ", SWARMLAB_".join(k.upper() for k in Config.model_fields)


_EXAMPLES = {
    "cidr": "write an IPv4 network with its prefix, such as 10.20.0.0/24",
    "overlay_pool": "write an IPv4 network with its prefix, such as 10.128.0.0/16",
    "bind_address": "write an IPv4 address such as 127.0.0.1",
    "managers": "write a whole number: 1, 3, 5 or 7",
    "workers": "write a whole number such as 3",
}


def _to_config_errors(error: ValidationError, data: Mapping[str, Any]) -> ConfigErrors:
    found: list[ConfigError] = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "config"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts = message.split("|")
        if len(parts) == 4:  # model-level check: key|value|problem|fix
            found.append(ConfigError(parts[0], parts[1], parts[2], parts[3]))
            continue
        problem, _, fix = message.partition("|")
        if item["type"] == "extra_forbidden":
            problem, fix = "is not a configuration key", f"remove it; known keys: {', '.join(Config.model_fields)}"
        fix = fix or _EXAMPLES.get(key, "see the documented keys in swarmlab.yaml")
        found.append(ConfigError(key, data.get(key, item.get("input")), problem, fix))
    return ConfigErrors(found)


def parse_config(data: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(dict(data))
    except ValidationError as error:
        raise _to_config_errors(error, data) from None


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (if any), apply SWARMLAB_* overrides, validate everything at once."""
    environ = os.environ if environ is None else environ
    path = path or Path(environ.get("SWARMLAB_CONFIG", DEFAULT_CONFIG_FILE))
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigErrors([ConfigError(str(path), "", f"is not valid YAML ({error})", "fix the syntax")]) from None
        if not isinstance(loaded, dict):
            raise ConfigErrors([ConfigError(str(path), type(loaded).__name__, "must be a mapping", "use key: value")])
        data.update(loaded)
    elif "SWARMLAB_CONFIG" in environ:
        raise ConfigErrors([ConfigError("SWARMLAB_CONFIG", str(path), "file does not exist", "point it at a file")])
    data.update(_env_overrides(environ))
    return parse_config(data)
