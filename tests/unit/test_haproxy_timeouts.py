"""HAProxy gives a request more time than any workload's service may take to answer it: the registration
API holds a request for up to its `request_deadline` while a stateful service moves, and the UI waits
5 s more for the API. A deadline HAProxy cut short would turn a held request into HAProxy's own 504."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = ROOT / "templates/haproxy/haproxy.cfg.j2"
REGISTRATION = ROOT / "workloads/registration"
UI_MARGIN = 5  # the UI's API_TIMEOUT is request_deadline + 5 (stack.yaml.j2)


def haproxy_timeout(name: str) -> int:
    found = re.search(rf"^\s*timeout {name} (\d+)s$", HAPROXY.read_text(), re.MULTILINE)
    assert found, f"no `timeout {name}` in {HAPROXY}"
    return int(found.group(1))


def test_the_largest_deadline_the_schema_allows_ends_before_haproxy_gives_up() -> None:
    schema = json.loads((REGISTRATION / "values.schema.json").read_text())
    largest = schema["properties"]["request_deadline"]["maximum"]
    assert largest + UI_MARGIN < haproxy_timeout("server") <= haproxy_timeout("client")


def test_every_values_file_stays_within_the_schema_and_the_ui_waits_longer_than_the_api() -> None:
    schema = json.loads((REGISTRATION / "values.schema.json").read_text())["properties"]["request_deadline"]
    for values in sorted((REGISTRATION / "values").glob("*.yaml")):
        deadline = yaml.safe_load(values.read_text())["request_deadline"]
        assert schema["minimum"] <= deadline <= schema["maximum"], values.name
    stack = (REGISTRATION / "stack.yaml.j2").read_text()
    assert f'API_TIMEOUT: "{{{{ values.request_deadline + {UI_MARGIN} }}}}"' in stack
