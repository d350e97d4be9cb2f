"""Shapes of output several facts share: names one a line, JSON one object a line, `---` sections."""

from __future__ import annotations

import json

SECTION = "---"


def parse_lines(output: str) -> tuple[str, ...]:
    """Non-empty lines, stripped: `docker secret ls`, `docker stack ls`, names one a line."""
    return tuple(line.strip() for line in output.splitlines() if line.strip())


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def sections(output: str) -> list[str]:
    """The parts of an output separated by `---` lines."""
    parts: list[list[str]] = [[]]
    for line in output.splitlines():
        if line.strip() == SECTION:
            parts.append([])
        else:
            parts[-1].append(line)
    return ["\n".join(part) for part in parts]
