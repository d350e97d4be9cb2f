"""The services' settings (pydantic-settings): variable names, defaults, overrides, secret files, errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import Field, SecretStr, ValidationError

from registration.api.app import ApiSettings
from registration.common import secretfiles
from registration.common.secretfiles import SecretError
from registration.common.settings import (
    ConfigError,
    EnvSettings,
    PostgresSettings,
    RabbitSettings,
    RedisSettings,
    SmtpSettings,
    variable_name,
)
from registration.common.web import ServeSettings
from registration.common.worker import WorkerSettings
from registration.email_otp.__main__ import OtpMailSettings
from registration.mailsink.__main__ import MailsinkSettings
from registration.otp.service import OtpSettings, policy_from_env
from registration.ui.app import UiSettings

PASSWORD = "correct-horse-battery-staple"
TEMPLATE = Path(__file__).resolve().parents[3] / "workloads" / "registration" / "stack.yaml.j2"
ALL_SETTINGS: tuple[type[EnvSettings], ...] = (
    RabbitSettings,
    RedisSettings,
    PostgresSettings,
    SmtpSettings,
    ApiSettings,
    UiSettings,
    WorkerSettings,
    ServeSettings,
    MailsinkSettings,
    OtpMailSettings,
    OtpSettings,
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An empty environment, so that the developer's own variables cannot decide a test."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    return monkeypatch


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")
    return str(path)


def keys(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The HMAC keys: the otp worker's code digests, the API's proofs, the UI's CSRF tokens."""
    for name in ("OTP_DIGEST_KEY", "PROOF_KEY", "CSRF_KEY"):
        env.setenv(f"{name}_FILE", secret_file(tmp_path, name.lower(), f"{name}-{PASSWORD}"))


def test_defaults(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("RABBITMQ_PASSWORD_FILE", secret_file(tmp_path, "rmq", PASSWORD))
    env.setenv("POSTGRES_PASSWORD_FILE", secret_file(tmp_path, "pg", PASSWORD))
    env.setenv("API_PASSWORD_FILE", secret_file(tmp_path, "api", PASSWORD))
    keys(env, tmp_path)

    rabbit = RabbitSettings.from_env()
    assert (rabbit.host, rabbit.port, rabbit.vhost, rabbit.user) == ("rabbitmq", 5672, "/", "registration")
    assert (rabbit.rpc_timeout, rabbit.connect_timeout) == (10.0, 0.0)
    redis = RedisSettings.from_env()
    assert (redis.host, redis.port, redis.db, redis.password) == ("redis", 6379, 0, None)
    pg = PostgresSettings.from_env()
    assert (pg.host, pg.port, pg.dbname, pg.user, pg.connect_timeout) == (
        "postgres",
        5432,
        "registration",
        "registration",
        5,
    )
    smtp = SmtpSettings.from_env()
    assert (smtp.host, smtp.port, smtp.starttls, smtp.user, smtp.password) == ("smtp", 25, False, None, None)
    assert (smtp.mail_from, smtp.timeout) == ("registration@example.org", 10.0)
    api = ApiSettings.from_env()
    assert (api.api_user, api.admin_user, api.admin_password) == ("api", "admin", None)
    assert (api.request_deadline, api.rpc_timeout, api.max_body_bytes, api.max_admin_body_bytes) == (
        60.0,
        10.0,
        65536,
        4 * 1024 * 1024,
    )
    assert api.forwarded_allow_ips == "*"
    ui = UiSettings.from_env()
    assert (ui.api_url, ui.api_user, ui.session_ttl, ui.cookie_secure, ui.api_timeout, ui.max_body_bytes) == (
        "http://api:8000",
        "api",
        1800,
        False,
        65.0,
        65536,
    )
    worker = WorkerSettings.from_env()
    assert (worker.heartbeat_file, worker.heartbeat_interval, worker.prefetch) == ("/tmp/healthy", 5.0, 10)
    serve = ServeSettings.from_env()
    assert (serve.host, serve.port, serve.forwarded_allow_ips, serve.shutdown_grace) == ("0.0.0.0", None, "*", 10.0)
    sink = MailsinkSettings.from_env()
    assert (sink.max_messages, sink.smtp_host, sink.smtp_port, sink.max_bytes) == (1000, "0.0.0.0", 2525, 1_048_576)
    assert OtpMailSettings.from_env().otp_ttl == 300
    policy = policy_from_env()
    assert (policy.otp_ttl, policy.max_attempts, policy.lock_seconds, policy.auth_ttl) == (300, 5, 900, 900)
    assert (policy.resend_window, policy.rate_window, policy.rate_per_email, policy.rate_per_client) == (60, 600, 5, 50)
    assert (policy.max_attempts_per_client, policy.max_attempts_per_email) == (10, 100)
    assert OtpSettings.from_env().digest_key.get_secret_value() == f"OTP_DIGEST_KEY-{PASSWORD}"
    assert (api.proof_key.get_secret_value(), api.proof_ttl) == (f"PROOF_KEY-{PASSWORD}", 900)
    assert ui.csrf_key.get_secret_value() == f"CSRF_KEY-{PASSWORD}"


def test_the_hmac_keys_come_only_from_their_files(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("API_PASSWORD_FILE", secret_file(tmp_path, "api", PASSWORD))
    for model, name in ((OtpSettings, "OTP_DIGEST_KEY"), (ApiSettings, "PROOF_KEY"), (UiSettings, "CSRF_KEY")):
        with pytest.raises((ConfigError, SecretError), match=name):
            model.from_env()  # no file: the service does not start
        env.setenv(name, "plain")
        with pytest.raises((ConfigError, SecretError), match=name):
            model.from_env()  # in the environment: refused
        env.delenv(name)


def test_admin_password_from_its_secret_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("API_PASSWORD_FILE", secret_file(tmp_path, "api", PASSWORD))
    env.setenv("ADMIN_PASSWORD_FILE", secret_file(tmp_path, "admin", "admin-" + PASSWORD))
    env.setenv("ADMIN_USER", "registrar")
    keys(env, tmp_path)
    api = ApiSettings.from_env()
    assert api.admin_user == "registrar"
    assert api.admin_password is not None and api.admin_password.get_secret_value() == "admin-" + PASSWORD
    env.setenv("ADMIN_PASSWORD", "plain")
    env.delenv("ADMIN_PASSWORD_FILE")
    with pytest.raises((ConfigError, SecretError)):
        ApiSettings.from_env()


def test_environment_overrides(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "RABBITMQ_HOST": "mq.internal",
        "RABBITMQ_PORT": "5673",
        "RABBITMQ_VHOST": "/reg",
        "RABBITMQ_USER": "rmq-user",
        "RPC_TIMEOUT": "2.5",
        "RABBITMQ_CONNECT_TIMEOUT": "30",
        "REDIS_HOST": "redis-session",
        "REDIS_PORT": "6380",
        "REDIS_DB": "3",
        "SMTP_HOST": "mailsink",
        "SMTP_PORT": "2525",
        "SMTP_STARTTLS": "true",
        "MAIL_FROM": "noreply@example.org",
        "SMTP_TIMEOUT": "4",
        "API_URL": "http://api:8000/",
        "SESSION_COOKIE_SECURE": "true",
        "SESSION_TTL": "60",
        "SESSION_OUTAGE_BUDGET": "33",
        "PORT": "8025",
        "OTP_TTL": "120",
        "OTP_MAX_ATTEMPTS": "3",
        "OTP_LOCK_SECONDS": "60",
        "AUTH_TTL": "30",
        "OTP_RESEND_WINDOW": "0",
        "OTP_RATE_WINDOW": "60",
        "OTP_RATE_PER_EMAIL": "2",
        "OTP_RATE_PER_CLIENT": "0",
        "OTP_MAX_ATTEMPTS_PER_CLIENT": "7",
        "OTP_MAX_ATTEMPTS_PER_EMAIL": "70",
        "REQUEST_DEADLINE": "25",
        "MAX_BODY_BYTES": "1024",
    }.items():
        env.setenv(name, value)
    env.setenv("RABBITMQ_PASSWORD_FILE", secret_file(tmp_path, "rmq", PASSWORD))
    env.setenv("API_PASSWORD_FILE", secret_file(tmp_path, "api", PASSWORD))
    keys(env, tmp_path)

    rabbit = RabbitSettings.from_env()
    assert (rabbit.host, rabbit.port, rabbit.vhost, rabbit.user) == ("mq.internal", 5673, "/reg", "rmq-user")
    assert (rabbit.rpc_timeout, rabbit.connect_timeout) == (2.5, 30.0)
    redis = RedisSettings.from_env()
    assert (redis.host, redis.port, redis.db) == ("redis-session", 6380, 3)
    smtp = SmtpSettings.from_env()
    assert (smtp.host, smtp.port, smtp.starttls, smtp.mail_from, smtp.timeout) == (
        "mailsink",
        2525,
        True,
        "noreply@example.org",
        4.0,
    )
    ui = UiSettings.from_env()
    assert (ui.api_url, ui.cookie_secure, ui.session_ttl) == ("http://api:8000", True, 60)  # no trailing slash
    assert ui.session_outage_budget == 33.0
    assert ServeSettings.from_env().port == 8025
    assert OtpMailSettings.from_env().otp_ttl == 120
    policy = policy_from_env()
    assert (policy.otp_ttl, policy.max_attempts, policy.lock_seconds, policy.auth_ttl) == (120, 3, 60, 30)
    assert (policy.resend_window, policy.rate_window, policy.rate_per_email, policy.rate_per_client) == (0, 60, 2, 0)
    assert (policy.max_attempts_per_client, policy.max_attempts_per_email) == (7, 70)
    api = ApiSettings.from_env()
    assert (api.request_deadline, api.rpc_timeout, api.max_body_bytes) == (25.0, 2.5, 1024)


def test_names_are_case_sensitive(env: pytest.MonkeyPatch) -> None:
    env.setenv("redis_host", "lowercase-is-another-variable")
    env.setenv("host", "a-field-name-is-no-variable")
    assert RedisSettings.from_env().host == "redis"


def test_blank_number_or_flag_means_default_but_blank_string_stays(env: pytest.MonkeyPatch) -> None:
    env.setenv("REDIS_PORT", "")
    env.setenv("SMTP_STARTTLS", "")
    env.setenv("PORT", "")
    env.setenv("REDIS_HOST", "")
    assert RedisSettings.from_env().port == 6379
    assert RedisSettings.from_env().host == ""
    assert SmtpSettings.from_env().starttls is False
    assert ServeSettings.from_env().port is None


@pytest.mark.parametrize(
    ("model", "name", "value"),
    [
        (RedisSettings, "REDIS_PORT", "sixty-three-seventy-nine"),
        (RedisSettings, "REDIS_DB", "1.5"),
        (SmtpSettings, "SMTP_TIMEOUT", "ten"),
        (SmtpSettings, "SMTP_STARTTLS", "maybe"),
        (WorkerSettings, "RPC_PREFETCH", "lots"),
    ],
)
def test_invalid_value_names_variable_and_value(
    env: pytest.MonkeyPatch, model: type[EnvSettings], name: str, value: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        model.from_env()
    assert f"{name}={value!r}" in str(err.value)


def test_password_from_secret_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("POSTGRES_PASSWORD_FILE", secret_file(tmp_path, "pg", PASSWORD + "-pg"))
    env.setenv("REDIS_PASSWORD_FILE", secret_file(tmp_path, "redis", PASSWORD + "-redis"))
    pg = PostgresSettings.from_env()
    redis = RedisSettings.from_env()
    assert isinstance(pg.password, SecretStr)
    assert pg.password.get_secret_value() == PASSWORD + "-pg"  # without the file's newline
    assert redis.password is not None and redis.password.get_secret_value() == PASSWORD + "-redis"
    assert secretfiles.redact(f"auth {PASSWORD}-pg failed") == "auth ********** failed"  # registered for the logs


def test_missing_required_secret_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="RABBITMQ_PASSWORD_FILE is not set"):
        RabbitSettings.from_env()
    env.setenv("API_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SecretError, match=r"cannot read secret API_PASSWORD from .*absent"):
        ApiSettings.from_env()


def test_plain_password_variable_refused(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for model, name in ((RabbitSettings, "RABBITMQ_PASSWORD"), (RedisSettings, "REDIS_PASSWORD")):
        env.setenv(name, PASSWORD)
        env.setenv(f"{name}_FILE", secret_file(tmp_path, name, PASSWORD))
        with pytest.raises(SecretError, match=f"{name}_FILE") as err:
            model.from_env()
        assert PASSWORD not in str(err.value)


def test_blank_plain_password_variable_is_not_a_password(env: pytest.MonkeyPatch) -> None:
    env.setenv("REDIS_PASSWORD", "")
    assert RedisSettings.from_env().password is None
    env.setenv("RABBITMQ_PASSWORD", "")
    with pytest.raises(SecretError, match="RABBITMQ_PASSWORD_FILE is not set"):
        RabbitSettings.from_env()


def test_user_from_value_or_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("RABBITMQ_PASSWORD_FILE", secret_file(tmp_path, "rmq", PASSWORD))
    env.setenv("RABBITMQ_USER", "from-the-variable")
    assert RabbitSettings.from_env().user == "from-the-variable"
    env.setenv("RABBITMQ_USER_FILE", secret_file(tmp_path, "user", "from-the-file"))
    assert RabbitSettings.from_env().user == "from-the-file"  # the file wins, as before


def test_smtp_user_needs_password_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SMTP_USER", "mailer")
    with pytest.raises(ConfigError, match="SMTP_USER is set but SMTP_PASSWORD_FILE is not"):
        SmtpSettings.from_env()
    env.setenv("SMTP_PASSWORD_FILE", secret_file(tmp_path, "smtp", PASSWORD))
    smtp = SmtpSettings.from_env()
    assert smtp.user == "mailer"
    assert smtp.password is not None and smtp.password.get_secret_value() == PASSWORD
    env.setenv("SMTP_USER", "")
    assert SmtpSettings.from_env().user is None


def test_settings_repr_hides_passwords(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("RABBITMQ_PASSWORD_FILE", secret_file(tmp_path, "rmq", PASSWORD))
    env.setenv("POSTGRES_PASSWORD_FILE", secret_file(tmp_path, "pg", PASSWORD + "-pg"))
    env.setenv("SMTP_USER", "mailer")
    env.setenv("SMTP_PASSWORD_FILE", secret_file(tmp_path, "smtp", PASSWORD + "-smtp"))
    for obj in (RabbitSettings.from_env(), PostgresSettings.from_env(), SmtpSettings.from_env()):
        assert PASSWORD not in repr(obj)
        assert PASSWORD not in str(obj)


def test_constructor_values_need_no_environment(env: pytest.MonkeyPatch) -> None:
    settings = ApiSettings(API_USER="tester", API_PASSWORD=SecretStr(PASSWORD), PROOF_KEY=SecretStr(PASSWORD))
    assert settings.api_password.get_secret_value() == PASSWORD
    with pytest.raises(ValidationError):
        settings.api_user = "changed"  # type: ignore[misc]  # frozen, like the dataclasses before


def test_a_field_must_name_its_variable() -> None:
    with pytest.raises(TypeError, match=r"Unnamed\.port must name its variable"):

        class Unnamed(EnvSettings):
            port: int = Field(1)


def test_template_sets_only_variables_the_settings_read() -> None:
    """The stack template and the settings agree on every name (a renamed variable fails here)."""
    read: set[str] = set()
    for model in ALL_SETTINGS:
        for field_name in model.model_fields:
            name = variable_name(model, field_name)
            read |= {name, f"{name}_FILE"}
    set_by_template = set(re.findall(r"^\s+([A-Z][A-Z0-9_]*):", TEMPLATE.read_text(encoding="utf-8"), re.M))
    images_only = {
        "REDIS_SAVE",
        "REDIS_MAXMEMORY",
        "REDIS_MAXMEMORY_POLICY",
        "REDIS_APPENDONLY",
        "RABBITMQ_LOG_BASE",
    }  # read by the redis image's entrypoint and by RabbitMQ, not by Python
    assert set_by_template - images_only <= read
    assert {"RABBITMQ_PASSWORD_FILE", "POSTGRES_PASSWORD_FILE", "API_PASSWORD_FILE", "OTP_TTL"} <= set_by_template
