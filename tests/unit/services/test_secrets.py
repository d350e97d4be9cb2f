from __future__ import annotations

import logging
from pathlib import Path

import pytest

from registration.common import secretfiles
from registration.common.logsetup import RedactingFormatter
from registration.common.secretfiles import Secret, SecretError, read_required_secret, read_secret
from registration.common.settings import ConfigError, PostgresSettings, RabbitSettings, SmtpSettings

PASSWORD = "correct-horse-battery-staple"


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")
    return str(path)


def test_secret_read_from_file_without_trailing_newline(tmp_path: Path) -> None:
    env = {"DB_PASSWORD_FILE": secret_file(tmp_path, "db", PASSWORD)}
    secret = read_required_secret("DB_PASSWORD", env)
    assert secret.reveal() == PASSWORD


def test_plain_env_var_refused(tmp_path: Path) -> None:
    env = {"DB_PASSWORD": PASSWORD, "DB_PASSWORD_FILE": secret_file(tmp_path, "db", PASSWORD)}
    with pytest.raises(SecretError) as err:
        read_secret("DB_PASSWORD", env)
    assert PASSWORD not in str(err.value)


def test_missing_or_unreadable_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SecretError):
        read_secret("DB_PASSWORD", {})
    assert read_secret("DB_PASSWORD", {}, required=False) is None
    with pytest.raises(SecretError):
        read_secret("DB_PASSWORD", {"DB_PASSWORD_FILE": str(tmp_path / "absent")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError):
        read_secret("DB_PASSWORD", {"DB_PASSWORD_FILE": str(tmp_path / "empty")})


def test_secret_hidden_from_repr_str_format() -> None:
    secret = Secret(PASSWORD)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}", f"{[secret]}"):
        assert PASSWORD not in text
    assert secret == Secret(PASSWORD)
    assert secret != Secret("other-value")


def test_settings_repr_hides_passwords(tmp_path: Path) -> None:
    env = {
        "RABBITMQ_PASSWORD_FILE": secret_file(tmp_path, "rmq", PASSWORD),
        "POSTGRES_PASSWORD_FILE": secret_file(tmp_path, "pg", PASSWORD + "-pg"),
        "SMTP_USER": "mailer",
        "SMTP_PASSWORD_FILE": secret_file(tmp_path, "smtp", PASSWORD + "-smtp"),
        "RABBITMQ_USER_FILE": secret_file(tmp_path, "rmq-user", "rmq-user"),
    }
    rabbit = RabbitSettings.from_env(env)
    pg = PostgresSettings.from_env(env)
    smtp = SmtpSettings.from_env(env)
    assert rabbit.user == "rmq-user"
    assert rabbit.password.reveal() == PASSWORD
    for obj in (rabbit, pg, smtp):
        assert PASSWORD not in repr(obj)
        assert PASSWORD not in str(obj)


def test_settings_refuse_plain_password_env() -> None:
    with pytest.raises(SecretError):
        RabbitSettings.from_env({"RABBITMQ_PASSWORD": PASSWORD})
    with pytest.raises(SecretError):
        PostgresSettings.from_env({"POSTGRES_PASSWORD": PASSWORD})


def test_smtp_user_needs_password_file() -> None:
    with pytest.raises(ConfigError):
        SmtpSettings.from_env({"SMTP_USER": "mailer"})
    plain = SmtpSettings.from_env({"SMTP_HOST": "mailsink", "SMTP_PORT": "2525"})
    assert plain.user is None and plain.password is None and plain.port == 2525


def test_log_lines_are_redacted(tmp_path: Path) -> None:
    env = {"X_PASSWORD_FILE": secret_file(tmp_path, "x", "p4ssw0rd-in-a-log-line")}
    read_required_secret("X_PASSWORD", env)
    formatter = RedactingFormatter("%(message)s")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "connecting with %s", ("p4ssw0rd-in-a-log-line",), None)
    assert "p4ssw0rd-in-a-log-line" not in formatter.format(record)
    try:
        raise RuntimeError("auth failed for p4ssw0rd-in-a-log-line")
    except RuntimeError:
        import sys

        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    out = formatter.format(record)
    assert "auth failed" in out
    assert "p4ssw0rd-in-a-log-line" not in out


def test_setup_logging_redacts_real_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from registration.common.logsetup import setup_logging

    read_required_secret("Y_PASSWORD", {"Y_PASSWORD_FILE": secret_file(tmp_path, "y", "another-secret-value")})
    log = setup_logging("test")
    log.warning("value is %s", "another-secret-value")
    out = capsys.readouterr().out
    assert "value is" in out
    assert "another-secret-value" not in out
    assert secretfiles.redact("x another-secret-value y") == "x ********** y"
