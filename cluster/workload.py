"""Workload bundles: what a stack needs, declared in its own directory and read by the generic deployer.

A bundle is a directory `workloads/<name>/` (like a Helm chart) holding:

- `bundle.yaml`: its HAProxy routes, image recipes, the secrets it needs (generated or read from a
  file the values name), data directories on the shared storage and their owners, how its data is
  backed up and restored, and the notes printed after a demo;
- `stack.yaml.j2`: the Swarm stack template;
- `values.schema.json` and `values/<environment>.yaml`: per-environment values, checked against the
  schema (JSON Schema, as Helm's values.schema.json).

The engine (cluster/) names no workload: adding a stack is adding a directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

import topology
from cluster.errors import ConfigError, ConfigErrors, problem
from rendering.render import render_file

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKLOADS_DIR = REPO_ROOT / "workloads"
MANIFEST = "bundle.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouteSpec(_Strict):
    """An edge service: published in host mode on every worker, balanced by HAProxy under a path prefix."""

    name: str
    path: str = Field(pattern=r"^/([A-Za-z0-9._-]+/)*$")  # "/" for the default route, else "/prefix/"
    port: int  # published on every worker: within topology.ROUTE_PORTS, the ports a cloud opens to HAProxy
    health: str = "/healthz"
    strip_prefix: bool = False  # the service knows nothing of its prefix (e.g. /mail/)
    when: str | None = None  # a values key: the route exists only where that value is true
    admin: bool = False  # HAProxy asks for the cluster's admin credential (e.g. a monitoring UI)
    # The route's own Content-Security-Policy (a UI we do not write, with inline scripts), instead
    # of HAProxy's strict default; it goes into haproxy.cfg between double quotes: no quote, no %.
    csp: str | None = Field(None, pattern=r"^[A-Za-z0-9 ;:'*./_+=-]+$")

    @model_validator(mode="after")
    def _port_in_range(self) -> RouteSpec:
        # Checked here, not found out on OpenStack, where a port outside is simply never reached.
        first, last = topology.ROUTE_PORTS
        if not first <= self.port <= last:
            raise problem(
                f"route {self.name!r} publishes port {self.port}, outside {first}-{last}: the cloud's security "
                "groups open only that range to HAProxy, so the route would get no traffic",
                f"give route {self.name!r} a free port in {first}-{last}",
                key="port",
                value=self.port,
            )
        return self


class ImageSpec(_Strict):
    """An image built on the storage node from files of the repository.

    `sources` maps a repository path (a file or a directory) to its place in the build context, so
    an image's tag hashes exactly what goes into it and nothing else.
    """

    name: str
    dockerfile: str
    sources: dict[str, str]
    build_args: dict[str, str] = Field(default_factory=dict)
    base: str | None = None  # another image of the bundle this one builds FROM (passed as RUNTIME_IMAGE)
    wheelhouse: str | None = None  # requirements file whose wheels go into the context's wheelhouse/


class FileSecret(_Strict):
    """A secret the operator keeps in a file on their machine (e.g. an SMTP relay's password)."""

    name: str
    path_value: str  # the values key holding the file's path
    when: str | None = None  # a values key: needed only where that value is set


class SecretsSpec(_Strict):
    generated: tuple[str, ...] = ()  # made once per cluster, kept in the state directory
    from_files: tuple[FileSecret, ...] = ()


class ConfigSpec(_Strict):
    """A configuration file of the bundle (not a secret), given to the services that use it as a Docker
    config mounted at `target`.

    `file` is a path in the bundle directory; a `.j2` file is rendered first, with the values and the
    cluster's addresses. The config's name hashes its content, so a change makes a new config and Swarm
    rolls exactly the services that mount it; versions no service mounts any more are pruned.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    file: str
    target: str = Field(pattern=r"^/")
    services: tuple[str, ...] = Field(min_length=1)  # the services of the stack that mount it
    when: str | None = None  # a values key: the config exists only where that value is true


class DataDir(_Strict):
    """A directory on the shared storage (the NFS export), owned by the uid the server runs as."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    owner: int = Field(ge=0)


class BackupSpec(_Strict):
    """Data `fab backup` saves and `fab restore` loads: both commands run in the service's running
    container (`docker exec`); `dump` writes the data to stdout, `restore` reads it back on stdin and
    must change nothing when it fails (a transaction, a validated file)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    service: str  # the service within the stack, as the stack file names it
    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # its file name in the backup directory
    dump: str
    restore: str


class Note(_Strict):
    """A line printed after a demo; `{http}`, `{credentials}` and `{storage_mode}` are filled in."""

    text: str
    when: str | None = None


class PrometheusSpec(_Strict):
    """Where the stack's Prometheus answers and what `fab status` asks it: PromQL queries that give one
    value per `service` label (requests and errors per second)."""

    route: str  # the route whose port Prometheus publishes on the workers and whose path is its prefix
    requests: str
    errors: str


class Manifest(_Strict):
    name: str
    description: str
    template: str = "stack.yaml.j2"
    routes: tuple[RouteSpec, ...] = ()
    images: tuple[ImageSpec, ...] = ()
    secrets: SecretsSpec = SecretsSpec()
    configs: tuple[ConfigSpec, ...] = ()
    data: tuple[DataDir, ...] = ()
    storage_value: str | None = None  # values key choosing the storage mode (auto | nfs | shared-dir)
    image_overrides: str | None = None  # values key mapping an image name to another reference
    backups: tuple[BackupSpec, ...] = ()
    notes: tuple[Note, ...] = ()
    prometheus: PrometheusSpec | None = None

    @model_validator(mode="after")
    def _prometheus_route_exists(self) -> Manifest:
        if self.prometheus and self.prometheus.route not in {r.name for r in self.routes}:
            raise ValueError(f"prometheus.route {self.prometheus.route!r} is not one of the bundle's routes")
        return self

    @property
    def prometheus_route(self) -> RouteSpec | None:
        return next((r for r in self.routes if self.prometheus and r.name == self.prometheus.route), None)


def known_workloads() -> tuple[str, ...]:
    return tuple(sorted(p.parent.name for p in WORKLOADS_DIR.glob(f"*/{MANIFEST}")))


def workload_environments(name: str) -> tuple[str, ...]:
    """The environments with a values file; empty for a bundle without values."""
    return tuple(sorted(p.stem for p in (WORKLOADS_DIR / name / "values").glob("*.yaml")))


def lookup(values: Mapping[str, Any] | None, key: str) -> Any:
    """A dotted values key ("smtp.user"); None where it is absent."""
    found: Any = values or {}
    for part in key.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return None
        found = found[part]
    return found


@dataclass(frozen=True)
class Workload:
    """A bundle with the values of one environment, checked against its schema."""

    manifest: Manifest
    directory: Path
    environment: str
    values: Mapping[str, Any] | None

    @property
    def name(self) -> str:
        return self.manifest.name

    def enabled(self, when: str | None) -> bool:
        return when is None or bool(lookup(self.values, when))

    @property
    def routes(self) -> tuple[RouteSpec, ...]:
        return tuple(r for r in self.manifest.routes if self.enabled(r.when))

    @property
    def storage_mode(self) -> str:
        wanted = lookup(self.values, self.manifest.storage_value) if self.manifest.storage_value else None
        return str(wanted or "auto")

    @property
    def image_overrides(self) -> dict[str, str]:
        found = lookup(self.values, self.manifest.image_overrides) if self.manifest.image_overrides else None
        return {str(k): str(v) for k, v in (found or {}).items()}

    @property
    def file_secrets(self) -> tuple[FileSecret, ...]:
        return tuple(s for s in self.manifest.secrets.from_files if self.enabled(s.when))

    @property
    def configs(self) -> tuple[ConfigSpec, ...]:
        return tuple(c for c in self.manifest.configs if self.enabled(c.when))

    def render(self, data: object) -> str:
        return render_file(self.directory, self.manifest.template, data)

    def config_content(self, config: ConfigSpec, data: object) -> str:
        """A config file's content: a `.j2` file rendered with `data`, any other read as it is."""
        if config.file.endswith(".j2"):
            return render_file(self.directory, config.file, data)
        return (self.directory / config.file).read_text()


def _schema_errors(path: Path, values: Any, schema: Mapping[str, Any]) -> list[ConfigError]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        ConfigError(
            f"{path.name}: {'.'.join(str(p) for p in error.absolute_path) or '(top)'}",
            error.instance if not isinstance(error.instance, dict | list) else "",
            error.message,
            "see the comments in the file and values.schema.json",
        )
        for error in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    ]


def _manifest_error(path: Path, error: ErrorDetails) -> ConfigError:
    """A bundle problem naming the file and the key; a check's own key, value and fix when it gives them."""
    context: dict[str, Any] = dict(error.get("ctx") or {})
    loc = [str(part) for part in error["loc"]]
    if "key" in context:
        loc.append(str(context["key"]))
    value = context.get("value", error.get("input", ""))
    return ConfigError(f"{path}: {'.'.join(loc)}", value, error["msg"], str(context.get("fix", "fix the bundle")))


@cache
def _manifest(name: str) -> tuple[Manifest, Path]:
    directory = WORKLOADS_DIR / name
    path = directory / MANIFEST
    if not path.exists():
        raise ConfigErrors(
            [ConfigError("stack", name, "is not a known stack", f"use one of: {', '.join(known_workloads())}")]
        )
    try:
        manifest = Manifest.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as error:
        raise ConfigErrors([_manifest_error(path, e) for e in error.errors()]) from None
    missing = [c for c in manifest.configs if not (directory / c.file).is_file()]
    if missing:
        raise ConfigErrors(
            [
                ConfigError(f"{path}: configs.{c.name}.file", c.file, "is not a file of the bundle", "fix the path")
                for c in missing
            ]
        )
    return manifest, directory


def merged(base: Any, overlay: Any) -> Any:
    """`overlay` over `base`, mappings key by key (as Helm merges `-f` files): any other value replaces."""
    if isinstance(base, Mapping) and isinstance(overlay, Mapping):
        return {**base, **{key: merged(base.get(key), value) for key, value in overlay.items()}}
    return overlay


def _read_values(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigErrors(
            [ConfigError("values", str(path), f"cannot be read as YAML ({error})", "fix the file")]
        ) from None


def load_workload(name: str, environment: str, values_file: Path | None = None) -> Workload:
    """The bundle `name` with its values for `environment` (and `values_file` over them, when given),
    every problem naming the file and the key."""
    manifest, directory = _manifest(name)
    overlay = _read_values(values_file) if values_file is not None else None
    environments = workload_environments(name)
    if not environments:
        return Workload(manifest, directory, environment, overlay)
    path = directory / "values" / f"{environment}.yaml"
    if not path.exists():
        raise ConfigErrors(
            [
                ConfigError(
                    "environment", environment, f"has no values file {path}", f"use one of: {', '.join(environments)}"
                )
            ]
        )
    values = _read_values(path)
    if overlay is not None:
        values = merged(values, overlay)
        path = values_file or path  # schema problems name the file that was given last
    schema_path = directory / "values.schema.json"
    if schema_path.exists():
        problems = _schema_errors(path, values, json.loads(schema_path.read_text()))
        if problems:
            raise ConfigErrors(problems)
    return Workload(manifest, directory, environment, values)
