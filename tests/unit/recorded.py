"""The recorded facts (tests/unit/facts/*.json): each file holds a fact (`module:NAME`, with `args`
when a function makes it), the command it runs, the output a lab gave, and the parsed value as
plain JSON. tests/unit/test_fact_fixtures.py checks every one; other tests take their outputs."""

from __future__ import annotations

import dataclasses
import importlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from cluster.facts import Fact

FACTS = Path(__file__).parent / "facts"


def fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((FACTS / f"{name}.json").read_text())
    return found


def recorded(name: str) -> str:
    """The output recorded in fixture `name`."""
    return str(fixture(name)["output"])


def fact_of(found: dict[str, Any]) -> Fact[object]:
    """The fixture's fact: the named constant, or the named function called with its `args`."""
    module, _, name = str(found["fact"]).partition(":")
    made = getattr(importlib.import_module(module), name)
    fact = made(*found["args"]) if "args" in found else made
    assert isinstance(fact, Fact), f"{found['fact']} is not a Fact"
    return fact


def plain(value: object) -> object:
    """A parsed fact as JSON holds it: dataclasses as objects, tuples as lists, sets sorted, times in ISO 8601."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(item) for item in value)  # type: ignore[type-var]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return value
