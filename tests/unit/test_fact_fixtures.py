"""Every fixture of tests/unit/facts/: the fact's command, rendered with the fixture's arguments, is the
command recorded there, and parsing the recorded output gives the recorded value. A changed command
(a `--format` template, a filter) or a changed parser fails here, as pyinfra's fact tests do."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import cluster.facts
from cluster.facts import Fact
from tests.unit.recorded import FACTS, fact_of, fixture, plain

FIXTURES = sorted(path.stem for path in FACTS.glob("*.json"))
# Facts with no fixture, and why: their arguments are objects a JSON file does not hold; their
# commands are asserted in the test named.
NO_FIXTURE = {"cluster.facts.storage:registry_check": "tests/unit/test_images.py"}


@pytest.mark.parametrize("name", FIXTURES)
def test_a_recorded_fact_has_its_command_and_parses_to_its_value(name: str) -> None:
    found = fixture(name)
    assert set(found) <= {"fact", "args", "note", "command", "output", "parsed"}
    fact = fact_of(found)
    assert fact.command == found["command"]
    assert plain(fact.parse(found["output"])) == found["parsed"]


def every_fact() -> set[str]:
    """`module:name` of every Fact constant and every function that makes one, in cluster/facts/."""
    names = set()
    for info in pkgutil.iter_modules(cluster.facts.__path__):
        module = importlib.import_module(f"cluster.facts.{info.name}")
        for name, value in vars(module).items():
            made_here = getattr(value, "__module__", module.__name__) == module.__name__
            returns: Any = getattr(value, "__annotations__", {}).get("return", "")
            if isinstance(value, Fact) or (callable(value) and made_here and str(returns).startswith("Fact[")):
                names.add(f"{module.__name__}:{name}")
    return names


def test_every_fact_has_a_fixture() -> None:
    covered = {str(fixture(name)["fact"]) for name in FIXTURES}
    facts = every_fact()
    assert facts, "no fact found: the scan is broken"
    assert facts - covered - set(NO_FIXTURE) == set()
    assert covered <= facts


def test_fixtures_are_files_of_this_directory() -> None:
    assert FIXTURES and all((FACTS / f"{name}.json").is_file() for name in FIXTURES)
    assert not [p.name for p in Path(FACTS).iterdir() if p.suffix != ".json"]
