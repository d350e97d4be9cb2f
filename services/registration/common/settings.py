"""Settings from environment variables; passwords only from secret files (see secretfiles)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from registration.common.secretfiles import Secret, read_required_secret, read_secret, read_value_or_file


class ConfigError(ValueError):
    """An environment variable has an invalid value."""


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def env_str(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    return _env(env).get(name, default)


def env_int(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    raw = _env(env).get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    raw = _env(env).get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    raw = _env(env).get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be a boolean, got {raw!r}")


@dataclass(frozen=True)
class RabbitSettings:
    host: str
    port: int
    vhost: str
    user: str
    password: Secret
    rpc_timeout: float
    connect_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RabbitSettings:
        return cls(
            host=env_str("RABBITMQ_HOST", "rabbitmq", env),
            port=env_int("RABBITMQ_PORT", 5672, env),
            vhost=env_str("RABBITMQ_VHOST", "/", env),
            user=read_value_or_file("RABBITMQ_USER", "registration", env),
            password=read_required_secret("RABBITMQ_PASSWORD", env),
            rpc_timeout=env_float("RPC_TIMEOUT", 10.0, env),
            connect_timeout=env_float("RABBITMQ_CONNECT_TIMEOUT", 0.0, env),
        )


@dataclass(frozen=True)
class RedisSettings:
    host: str
    port: int
    db: int
    password: Secret | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RedisSettings:
        return cls(
            host=env_str("REDIS_HOST", "redis", env),
            port=env_int("REDIS_PORT", 6379, env),
            db=env_int("REDIS_DB", 0, env),
            password=read_secret("REDIS_PASSWORD", env, required=False),
        )


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    dbname: str
    user: str
    password: Secret
    connect_timeout: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PostgresSettings:
        return cls(
            host=env_str("POSTGRES_HOST", "postgres", env),
            port=env_int("POSTGRES_PORT", 5432, env),
            dbname=env_str("POSTGRES_DB", "registration", env),
            user=read_value_or_file("POSTGRES_USER", "registration", env),
            password=read_required_secret("POSTGRES_PASSWORD", env),
            connect_timeout=env_int("POSTGRES_CONNECT_TIMEOUT", 5, env),
        )


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool
    user: str | None
    password: Secret | None
    mail_from: str
    timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpSettings:
        user = read_value_or_file("SMTP_USER", "", env) or None
        password = read_secret("SMTP_PASSWORD", env, required=False)
        if user and password is None:
            raise ConfigError("SMTP_USER is set but SMTP_PASSWORD_FILE is not")
        return cls(
            host=env_str("SMTP_HOST", "smtp", env),
            port=env_int("SMTP_PORT", 25, env),
            starttls=env_bool("SMTP_STARTTLS", False, env),
            user=user,
            password=password,
            mail_from=env_str("MAIL_FROM", "registration@example.org", env),
            timeout=env_float("SMTP_TIMEOUT", 10.0, env),
        )
