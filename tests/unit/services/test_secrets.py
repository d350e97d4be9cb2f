from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from registration.common import secretfiles
from registration.common.logsetup import RedactingFormatter
from registration.common.secretfiles import SecretError, read_secret, read_value_file

PASSWORD = "correct-horse-battery-staple"


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")
    return str(path)


def test_secret_read_from_file_without_trailing_newline(tmp_path: Path) -> None:
    env = {"DB_PASSWORD_FILE": secret_file(tmp_path, "db", PASSWORD)}
    secret = read_secret("DB_PASSWORD", env)
    assert isinstance(secret, SecretStr)
    assert secret.get_secret_value() == PASSWORD


def test_plain_env_var_refused(tmp_path: Path) -> None:
    env = {"DB_PASSWORD": PASSWORD, "DB_PASSWORD_FILE": secret_file(tmp_path, "db", PASSWORD)}
    with pytest.raises(SecretError) as err:
        read_secret("DB_PASSWORD", env)
    assert PASSWORD not in str(err.value)


def test_missing_or_unreadable_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="DB_PASSWORD_FILE is not set"):
        read_secret("DB_PASSWORD", {})
    assert read_secret("DB_PASSWORD", {}, required=False) is None
    with pytest.raises(SecretError, match="absent"):
        read_secret("DB_PASSWORD", {"DB_PASSWORD_FILE": str(tmp_path / "absent")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        read_secret("DB_PASSWORD", {"DB_PASSWORD_FILE": str(tmp_path / "empty")})


def test_secret_hidden_from_repr_str_format(tmp_path: Path) -> None:
    secret = read_secret("DB_PASSWORD", {"DB_PASSWORD_FILE": secret_file(tmp_path, "db", PASSWORD)})
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{[secret]}"):
        assert PASSWORD not in text


def test_value_file_is_optional_and_not_redacted(tmp_path: Path) -> None:
    assert read_value_file("DB_USER", {"DB_USER": "plain"}) is None  # the caller falls back to DB_USER
    env = {"DB_USER_FILE": secret_file(tmp_path, "user", "user-from-a-file")}
    assert read_value_file("DB_USER", env) == "user-from-a-file"
    assert secretfiles.redact("user-from-a-file") == "user-from-a-file"  # a user name is no secret


def test_log_lines_are_redacted(tmp_path: Path) -> None:
    env = {"X_PASSWORD_FILE": secret_file(tmp_path, "x", "p4ssw0rd-in-a-log-line")}
    read_secret("X_PASSWORD", env)
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

    read_secret("Y_PASSWORD", {"Y_PASSWORD_FILE": secret_file(tmp_path, "y", "another-secret-value")})
    log = setup_logging("test")
    log.warning("value is %s", "another-secret-value")
    out = capsys.readouterr().out
    assert "value is" in out
    assert "another-secret-value" not in out
    assert secretfiles.redact("x another-secret-value y") == "x ********** y"
