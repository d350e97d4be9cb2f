"""Per-environment values of a stack (like Helm's values.prod.yaml / values.staging.yaml): read once,
validated, every problem naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster.errors import ConfigError, ConfigErrors

REPO_ROOT = Path(__file__).resolve().parents[1]


class Smtp(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    user: str = ""
    # A file on the operator's machine holding the relay's password; it becomes a Docker secret.
    password_file: str = ""


class Values(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # auto: NFS volumes where every worker's kernel has an NFS client, else (lab only) the export
    # directory shared into every worker at the same path.
    storage: Literal["auto", "nfs", "shared-dir"] = "auto"
    mailsink: bool = False
    smtp: Smtp
    mail_from: str
    api_user: str = "api"
    edge_replicas: int = Field(3, ge=0, description="ui and api tasks, at most one per worker")
    worker_replicas: int = Field(1, ge=1, description="tasks of each RPC worker service")
    otp_ttl: int = Field(300, ge=30)
    otp_max_attempts: int = Field(5, ge=1)
    otp_lock_seconds: int = Field(900, ge=1)
    images: dict[str, str] = Field(default_factory=dict, description="service -> image reference override")
    session_cookie_secure: bool = False


def load_values(values_dir: str, environment: str) -> Values:
    path = REPO_ROOT / values_dir / f"{environment}.yaml"
    if not path.exists():
        choices = ", ".join(sorted(p.stem for p in (REPO_ROOT / values_dir).glob("*.yaml")))
        raise ConfigErrors(
            [ConfigError("environment", environment, f"has no values file {path}", f"use one of: {choices}")]
        )
    try:
        return Values.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as error:
        raise ConfigErrors(
            [
                ConfigError(
                    f"{path.name}: {'.'.join(str(p) for p in e['loc'])}",
                    e.get("input", ""),
                    e["msg"],
                    "see the comments in the file",
                )
                for e in error.errors()
            ]
        ) from None
