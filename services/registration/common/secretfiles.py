"""Secrets come only from files (Docker/Swarm secrets under /run/secrets).

A secret ``NAME`` is read from the file named by the environment variable ``NAME_FILE``. A plain
``NAME`` environment variable holding the value itself is refused: environment variables leak
(``docker inspect``, ``/proc/*/environ``, crash dumps). Values come back as pydantic's
:class:`~pydantic.SecretStr`, whose ``repr``/``str`` never show the value, and are registered so
that the log formatter can redact them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from pydantic import SecretStr

_MASK: Final = "**********"

_registry_lock = threading.Lock()
_registered: set[str] = set()


class SecretError(RuntimeError):
    """A secret is missing, unreadable or was passed in a plain environment variable."""


def register_secret_value(value: str) -> None:
    """Remember a value so that :func:`redact` removes it from log lines."""
    if len(value) >= 4:  # very short values would redact ordinary words
        with _registry_lock:
            _registered.add(value)


def redact(text: str) -> str:
    """Replace every registered secret value occurring in ``text`` by a mask."""
    with _registry_lock:
        values = sorted(_registered, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, _MASK)
    return text


def _read_file(path: str, name: str) -> str:
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:  # the message names the file, never its content
        raise SecretError(f"cannot read secret {name} from {path}: {exc.strerror}") from None
    value = raw.rstrip("\r\n")
    if not value:
        raise SecretError(f"secret {name} in {path} is empty")
    return value


def read_secret(name: str, env: Mapping[str, str] | None = None, *, required: bool = True) -> SecretStr | None:
    """Read secret ``name`` from the file named by ``{name}_FILE``.

    Returns ``None`` when the secret is optional and ``{name}_FILE`` is unset. Raises
    :class:`SecretError` when ``{name}`` itself is set in the environment.
    """
    environ = os.environ if env is None else env
    if environ.get(name):
        raise SecretError(
            f"{name} must not be passed in a plain environment variable; "
            f"put it in a file and set {name}_FILE to its path"
        )
    path = environ.get(f"{name}_FILE", "")
    if not path:
        if required:
            raise SecretError(f"{name}_FILE is not set")
        return None
    value = _read_file(path, name)
    register_secret_value(value)
    return SecretStr(value)


def read_value_file(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A non-secret value (e.g. a user name) from the file ``{name}_FILE``; ``None`` when that is unset.

    The caller then falls back to the plain ``{name}`` variable, which is allowed for such values.
    """
    environ = os.environ if env is None else env
    path = environ.get(f"{name}_FILE", "")
    return _read_file(path, name) if path else None
