"""Durations given on the command line ("90s", "10m", "1h30m", "2d"): checked before anything runs."""

from __future__ import annotations

import re

from cluster.errors import ConfigError

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNITS = (86_400, 3_600, 60, 1)


def parse_duration(text: str, flag: str) -> int:
    """Seconds in `text`; a ConfigError naming the flag otherwise (zero is refused: it means nothing)."""
    found = _DURATION.match(text.strip())
    if not text.strip() or not found:
        raise ConfigError(flag, text, "is not a duration", "write it as 90s, 10m, 1h30m or 2d")
    seconds = sum(int(n) * unit for n, unit in zip(found.groups(), _UNITS, strict=True) if n)
    if seconds == 0:
        raise ConfigError(flag, text, "is zero", "give a duration of at least 1s")
    return seconds
