"""The lab and cluster configuration: one typed object, read once, validated before anything runs.

pydantic-settings reads it. Sources, later ones winning: built-in defaults, the YAML file
(`swarmlab.yaml`, or the path in SWARMLAB_CONFIG), then environment variables SWARMLAB_<KEY> (for
example SWARMLAB_WORKERS=2). Every problem is reported at once, each naming the key, the value and
the fix (pydantic errors carry the fix in their context; nothing is parsed back out of strings).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

import haproxy.model as haproxy
import topology
from cluster.errors import ConfigError, ConfigErrors, problem
from cluster.state import CLUSTER_NAME, StatePaths, cluster_dir
from cluster.workload import known_workloads, workload_environments
from workloads import DEFAULT_WORKLOAD

DEFAULT_CONFIG_FILE = "swarmlab.yaml"
DEFAULT_KEEP_REVISIONS, MIN_KEEP_REVISIONS, MAX_KEEP_REVISIONS = 20, 2, 200
ENV_PREFIX = "SWARMLAB_"
# SWARMLAB_* variables that are not configuration keys: where the file is, and the test lab's switch.
NOT_KEYS = frozenset({"SWARMLAB_CONFIG", "SWARMLAB_KEEP_LAB"})

# A DNS name (RFC 1123 labels); a leading "*." for a wildcard.
DNS_NAME = re.compile(
    r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)

MIRROR_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")

# Where this load reads from; set by load_config for the duration of one validation.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("swarmlab_environ", default=None)
_YAML_FILE: ContextVar[Path | None] = ContextVar("swarmlab_yaml_file", default=None)


class _Environ(EnvSettingsSource):
    """SWARMLAB_* from the mapping load_config was given (os.environ by default), not always os.environ."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(_ENVIRON.get() or {}, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Config(BaseSettings):
    """Every key a user may set. Field descriptions are the documentation of the key."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    cluster: str = Field("demo", description="cluster name; labels, network and state dir derive from it")
    managers: int = Field(3, description=f"manager count: {topology.MANAGER_COUNTS_TEXT} (an odd Raft majority)")
    workers: int = Field(3, description="worker count, at least 1")
    lb_count: int = Field(
        1, description="HAProxy nodes: 1, or 2 sharing a virtual IP with keepalived (groundwork: not in the lab yet)"
    )
    autolock: bool = Field(
        True,
        description="swarm autolock: a restarted manager waits for the unlock key the tasks keep in the state "
        "directory (`docker swarm init --force-new-cluster` cannot re-form a locked swarm: see docs/security.md)",
    )
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
    http_port: int = Field(8080, description="host port of HAProxy's HTTP frontend (lab): it only redirects to HTTPS")
    https_port: int = Field(8443, description="host port of HAProxy's HTTPS frontend (lab)")
    ssh_port: int = Field(2222, description="host port of the lb node's SSH, the jump host (lab)")
    stats_port: int = Field(8404, description="host port of HAProxy's stats page (lab)")
    edge_conn_per_source: int = Field(
        haproxy.CONN_PER_SOURCE,
        ge=50,
        le=100000,
        description="connections one client address may hold at once at HAProxy (more are refused); "
        "make bench and make chaos open up to 24 from one address",
    )
    debian_mirror: str = Field("http://deb.debian.org/debian", description="Debian mirror for images")
    debian_suite: str = Field("bookworm", description="Debian release the images are built from")
    stack: str = Field(DEFAULT_WORKLOAD, description="the workload deploy-stack deploys (a directory of workloads/)")
    environment: str = Field("lab", description="values file of the stack: workloads/<stack>/values/<environment>.yaml")
    state_dir: Path | None = Field(
        None, description="where keys, inventory and credentials live (default ~/.local/state/swarmlab)"
    )
    tls_cert: Path | None = Field(
        None, description="your certificate chain for HAProxy (PEM); default: one from the cluster's own CA"
    )
    tls_key: Path | None = Field(None, description="the private key of tls_cert (PEM, mode 600)")
    tls_names: tuple[str, ...] = Field(
        (), description="DNS names the cluster CA puts on HAProxy's certificate besides the lb's address"
    )
    keep_revisions: int = Field(
        DEFAULT_KEEP_REVISIONS,
        description="revisions of each stack kept in the state directory (fab history, fab rollback-stack)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _Environ(settings_cls)]
        yaml_file = _YAML_FILE.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @field_validator("cluster")
    @classmethod
    def _cluster_name(cls, value: str) -> str:
        # What Docker accepts in container, network and volume names, less '_' and '.' (the name also
        # names OpenStack servers and a state directory).
        if not value.isascii():
            raise problem("must be ASCII: Docker refuses other letters in names", "use a name such as 'demo'")
        if not CLUSTER_NAME.fullmatch(value):
            raise problem(
                "must hold only ASCII letters, digits and '-', not start with '-', at most 30 characters",
                "use a name such as 'demo' or 'course-2026'",
            )
        return value

    @field_validator("debian_mirror")
    @classmethod
    def _mirror(cls, value: str) -> str:
        # It goes into debootstrap's and apt's command lines and sources, run as root.
        if not MIRROR_URL.fullmatch(value):
            raise problem(
                "is not an http(s) URL of letters, digits and ._~/:- only",
                "write a mirror such as http://deb.debian.org/debian",
            )
        return value

    @field_validator("debian_suite")
    @classmethod
    def _suite(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", value):
            raise problem("is not a Debian suite name", "write a codename such as bookworm")
        return value

    @field_validator("tls_names")
    @classmethod
    def _dns_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not DNS_NAME.fullmatch(name):
                raise problem(f"{name!r} is not a DNS name", "write names such as registration.example.org")
        return value

    @field_validator("keep_revisions")
    @classmethod
    def _revisions(cls, value: int) -> int:
        if not MIN_KEEP_REVISIONS <= value <= MAX_KEEP_REVISIONS:
            raise problem(
                f"must be {MIN_KEEP_REVISIONS}-{MAX_KEEP_REVISIONS}: a rollback needs the revision before the "
                "current one, and each kept revision keeps its secret and config versions on the swarm",
                f"set keep_revisions to {DEFAULT_KEEP_REVISIONS} (the default)",
            )
        return value

    @field_validator("managers")
    @classmethod
    def _odd_managers(cls, value: int) -> int:
        if (managers_problem := topology.manager_count_problem(value)) is not None:
            nearest = max(c for c in topology.MANAGER_COUNTS if c <= max(value, 1))
            raise problem(managers_problem, f"set managers to {nearest}")
        return value

    @field_validator("workers")
    @classmethod
    def _some_workers(cls, value: int) -> int:
        if value < 1:
            raise problem("managers are drained, so the services need at least one worker", "set workers >= 1")
        return value

    @field_validator("lb_count")
    @classmethod
    def _lb_count(cls, value: int) -> int:
        if (lb_problem := topology.lb_count_problem(value)) is not None:
            raise problem(lb_problem, "set lb_count to 1 (one HAProxy node) or 2 (two behind a virtual IP)")
        return value

    @field_validator("cidr", "overlay_pool")
    @classmethod
    def _private(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not value.is_private:
            raise problem("must be a private (RFC 1918) range", "use e.g. 10.20.0.0/24")
        return value

    @field_validator("http_port", "https_port", "ssh_port", "stats_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1024 <= value <= 65535:
            raise problem("must be an unprivileged port, 1024-65535", "pick a free port such as 8080")
        return value

    @model_validator(mode="after")
    def _fits(self) -> Config:
        needed = topology.addresses_needed(self.workers)
        if self.cidr.num_addresses < needed:
            raise problem(
                f"holds {self.cidr.num_addresses} addresses but {self.workers} workers need {needed}",
                "use a larger network such as a /24",
                key="cidr",
                value=str(self.cidr),
            )
        if self.cidr.overlaps(self.overlay_pool):
            raise problem(
                f"overlaps cidr {self.cidr}: overlay traffic would be routed onto the node network",
                "choose disjoint ranges, e.g. cidr 10.20.0.0/24 and overlay_pool 10.128.0.0/16",
                key="overlay_pool",
                value=str(self.overlay_pool),
            )
        ports = [self.http_port, self.https_port, self.ssh_port, self.stats_port]
        if len(set(ports)) != len(ports):
            raise problem(
                "http_port, https_port, ssh_port and stats_port must differ",
                "give each its own port",
                key="http_port",
                value=str(ports),
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise problem(
                "tls_cert and tls_key go together",
                "set both (your certificate chain and its key), or neither for one from the cluster CA",
                key="tls_cert" if self.tls_cert is None else "tls_key",
                value=None,
            )
        return self

    @model_validator(mode="after")
    def _known_workload(self) -> Config:
        # Known before anything is touched, not found out halfway through a bootstrap.
        if self.stack not in known_workloads():
            raise problem(
                "is not a known stack", f"use one of: {', '.join(known_workloads())}", key="stack", value=self.stack
            )
        environments = workload_environments(self.stack)
        if environments and self.environment not in environments:
            raise problem(
                f"has no values file for stack {self.stack}",
                f"use one of: {', '.join(environments)}",
                key="environment",
                value=self.environment,
            )
        return self

    # Derived values: computed, never stored, so they cannot disagree with the keys.
    def address(self, offset: int) -> str:
        return topology.address(self.cidr, offset)

    @property
    def state_root(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir.expanduser()
        return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "swarmlab"

    def state(self, *, provider: str, cluster: str | None = None) -> StatePaths:
        """The state directory of a provider's cluster (this config's cluster by default): one per provider,
        so a lab never touches a Pulumi or static target's credentials of the same name. A directory of
        the older layout (`<root>/<cluster>`) is moved here first when it is this provider's."""
        return cluster_dir(self.state_root, provider, cluster or self.cluster)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What is allowed but worth saying before the lab is made."""
        found = []
        if not self.bind_address.is_loopback:
            found.append(
                f"bind_address={self.bind_address} is not a loopback address: the lab publishes HAProxy there, "
                "and with it the lab's mail sink (/mail/), which shows every OTP to whoever reaches that address"
            )
        return tuple(found)


_EXAMPLES = {
    "cidr": "write an IPv4 network with its prefix, such as 10.20.0.0/24",
    "overlay_pool": "write an IPv4 network with its prefix, such as 10.128.0.0/16",
    "bind_address": "write an IPv4 address such as 127.0.0.1",
    "managers": f"write a whole number: {topology.MANAGER_COUNTS_TEXT}",
    "workers": "write a whole number such as 3",
    "lb_count": "write 1 or 2",
    "autolock": "write true or false",
    "keep_revisions": f"write a whole number such as {DEFAULT_KEEP_REVISIONS}",
}


def _to_config_errors(error: ValidationError) -> ConfigErrors:
    found: list[ConfigError] = []
    for item in error.errors():
        context: dict[str, Any] = dict(item.get("ctx") or {})
        key = str(context.get("key") or ".".join(str(part) for part in item["loc"]) or "config")
        value = context.get("value", item.get("input"))
        if item["type"] == "extra_forbidden":
            found.append(
                ConfigError(
                    key, value, "is not a configuration key", f"remove it; known keys: {', '.join(Config.model_fields)}"
                )
            )
            continue
        message = str(item["msg"]).removeprefix("Value error, ")
        fix = str(context.get("fix") or _EXAMPLES.get(key, "see the documented keys in swarmlab.yaml"))
        found.append(ConfigError(key, value, message, fix))
    return ConfigErrors(found)


def _check_env_names(environ: Mapping[str, str]) -> None:
    unknown = [
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in NOT_KEYS
        and name[len(ENV_PREFIX) :].lower() not in Config.model_fields
    ]
    if unknown:
        keys = ", ".join(f"{ENV_PREFIX}{k.upper()}" for k in Config.model_fields)
        raise ConfigErrors(
            [ConfigError(name, environ[name], "is not a configuration key", f"use one of {keys}") for name in unknown]
        )


def _check_yaml(path: Path) -> None:
    """pydantic-settings reads the file; a syntax error or a list at the top is reported here, with the path."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigErrors([ConfigError(str(path), "", f"is not valid YAML ({error})", "fix the syntax")]) from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigErrors([ConfigError(str(path), type(loaded).__name__, "must be a mapping", "use key: value")])


def _validate(data: Mapping[str, Any], environ: Mapping[str, str], yaml_file: Path | None) -> Config:
    environ_token = _ENVIRON.set(environ)
    yaml_token = _YAML_FILE.set(yaml_file)
    try:
        return Config(**data)
    except ValidationError as error:
        raise _to_config_errors(error) from None
    finally:
        _ENVIRON.reset(environ_token)
        _YAML_FILE.reset(yaml_token)


def parse_config(data: Mapping[str, Any]) -> Config:
    """Validate a mapping of keys alone (no file, no environment): what the unit tests use."""
    return _validate(data, {}, None)


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (if any), apply SWARMLAB_* overrides, validate everything at once."""
    environ = os.environ if environ is None else environ
    path = path or Path(environ.get("SWARMLAB_CONFIG", DEFAULT_CONFIG_FILE))
    if path.exists():
        _check_yaml(path)
    elif "SWARMLAB_CONFIG" in environ:
        raise ConfigErrors([ConfigError("SWARMLAB_CONFIG", str(path), "file does not exist", "point it at a file")])
    _check_env_names(environ)
    return _validate({}, environ, path if path.exists() else None)
