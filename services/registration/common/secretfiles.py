"""Secrets come only from files (Docker/Swarm secrets under /run/secrets).

A secret ``NAME`` is read from the file named by the environment variable ``NAME_FILE``. A plain
``NAME`` environment variable holding the value itself is refused: environment variables leak
(``docker inspect``, ``/proc/*/environ``, crash dumps). Values are wrapped in :class:`Secret`, whose
``repr``/``str`` never show the value, and are registered so that the log formatter can redact them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

_MASK: Final = "**********"

_registry_lock = threading.Lock()
_registered: set[str] = set()


class SecretError(RuntimeError):
    """A secret is missing, unreadable or was passed in a plain environment variable."""


class Secret:
    """A string that does not show itself in repr(), str(), f-strings or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret_value(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values cannot be pickled")


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


def read_secret(name: str, env: Mapping[str, str] | None = None, *, required: bool = True) -> Secret | None:
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
    return Secret(_read_file(path, name))


def read_required_secret(name: str, env: Mapping[str, str] | None = None) -> Secret:
    secret = read_secret(name, env, required=True)
    assert secret is not None
    return secret


def read_value_or_file(name: str, default: str, env: Mapping[str, str] | None = None) -> str:
    """A non-secret value (e.g. a user name) from ``name`` or from the file ``{name}_FILE``."""
    environ = os.environ if env is None else env
    path = environ.get(f"{name}_FILE", "")
    if path:
        return _read_file(path, name)
    return environ.get(name, default)
