"""Errors that tell the user what failed, where, and what to do about it.

Every error the tool raises on purpose derives from SwarmlabError; the fab tasks print it without a
traceback and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic_core import PydanticCustomError

OUTPUT_TAIL_LINES = 15


class SwarmlabError(Exception):
    """A failure the user can act on."""


class ConfigError(SwarmlabError):
    """A configuration value is wrong: names the key, the value and the fix."""

    def __init__(self, key: str, value: object, problem: str, fix: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{key}={_show(value)}: {problem}. Fix: {fix}")


def _show(value: object) -> str:
    # Quote only strings that would be ambiguous bare: empty, or with spaces.
    if isinstance(value, str) and (value == "" or " " in value):
        return repr(value)
    return str(value)


def problem(message: str, fix: str, **where: object) -> PydanticCustomError:
    """A validation error that carries its fix (and, for cross-key checks, the key and value it is about)
    in its context, so nothing has to be parsed back out of the message."""
    return PydanticCustomError("swarmlab", message, {"fix": fix, **where})


class ConfigErrors(SwarmlabError):
    """Several configuration values are wrong; all are reported at once."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"invalid configuration ({len(errors)} problem(s)):\n{lines}")


class OptionErrors(ConfigErrors):
    """Command-line options that are wrong (a malformed duration, a bad pattern): all reported at once,
    before anything runs."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__(errors)
        lines = "\n".join(f"  - {e}" for e in errors)
        self.args = (f"invalid option(s) ({len(errors)} problem(s)):\n{lines}",)


def tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret value in text, so an error message never carries one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class CommandFailed(SwarmlabError):
    """A command failed on a node: carries the host, the command, the exit code and the output tail."""

    def __init__(self, host: str, command: str, exit_code: int | None, output: str, hint: str = "") -> None:
        self.host = host
        self.command = command
        self.exit_code = exit_code
        self.output = output
        self.hint = hint
        code = "no exit code (connection failed)" if exit_code is None else f"exit {exit_code}"
        message = f"on {host}: `{command}` failed ({code})"
        if output.strip():
            message += f"; last output:\n{tail(output)}"
        if hint:
            message += f"\nHint: {hint}"
        super().__init__(message)


class HostsFailed(SwarmlabError):
    """A step run on several hosts at once failed on some: carries every host's error."""

    def __init__(self, step: str, failures: Mapping[str, Exception]) -> None:
        self.failures = dict(failures)
        parts = "\n".join(f"- {host}: {error}" for host, error in sorted(self.failures.items()))
        super().__init__(f"{step} failed on {len(self.failures)} host(s):\n{parts}")
