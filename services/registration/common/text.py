"""Names as people type them, without the characters that only ever mean trouble."""

from __future__ import annotations

import unicodedata
from typing import Final

NAME_MAX_LEN: Final = 100
# Control, surrogate, private-use, unassigned, line/paragraph separators: never part of a name.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Co", "Cn", "Zl", "Zp"})
# Bidirectional overrides and isolates can make a name display as something else. Zero-width
# (non-)joiners stay allowed: several scripts need them in names.
_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_name(value: str) -> str:
    """Whitespace runs collapsed to one space; ValueError for an empty, too long or unsafe name."""
    if not isinstance(value, str):
        raise ValueError("name must be text")
    name = " ".join(value.split())
    if not 0 < len(name) <= NAME_MAX_LEN:
        raise ValueError("name must be 1..100 characters")
    for char in name:
        if char in _BIDI_CONTROLS or unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ValueError("name contains a control character")
    return name
