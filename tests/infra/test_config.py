"""Configuration: defaults, parsing of Pulumi's string values, and errors that name the key, raised
before any resource is declared."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import DEFAULTS, PROJECT, InfraConfig, InfraConfigError, parse_config, unknown_keys
from tests.infra.harness import BASE_CONFIG, run_failing

EXAMPLE = Path(__file__).resolve().parents[2] / "Pulumi.example.yaml"

BAD = [
    (
        {"manager_count": "4"},
        "manager_count=4: must be 1, 3, 5 or 7: Raft needs an odd number of managers to keep a majority",
    ),
    ({"manager_count": "0"}, "manager_count=0: must be 1, 3, 5 or 7: Raft needs"),
    ({"manager_count": "three"}, "manager_count=three: must be a whole number"),
    ({"worker_count": "0"}, "worker_count=0: must be at least 1"),
    ({"worker_count": "500"}, "worker_count=500: must be at most 179"),
    ({"private_cidr": "10.20.0.0/33"}, "private_cidr=10.20.0.0/33: is not an IPv4 CIDR"),
    ({"private_cidr": "nonsense"}, "private_cidr=nonsense: is not an IPv4 CIDR"),
    ({"private_cidr": "10.20.0.1/24"}, "private_cidr=10.20.0.1/24: has host bits set; use 10.20.0.0/24"),
    ({"private_cidr": "10.20.0.0/26"}, "private_cidr=10.20.0.0/26: must be a /24 or larger"),
    ({"admin_cidrs": "[]"}, "admin_cidrs=[]: must list at least one CIDR"),
    ({"admin_cidrs": ""}, "admin_cidrs: is required"),
    ({"admin_cidrs": "0.0.0.0/0"}, "admin_cidrs=0.0.0.0/0: must not contain 0.0.0.0/0"),
    ({"admin_cidrs": "203.0.113.7/32,0.0.0.0/0"}, "must not contain 0.0.0.0/0"),
    ({"admin_cidrs": "0.0.0.0/1,128.0.0.0/1"}, "together cover 100% of all IPv4 addresses"),
    ({"admin_cidrs": "0.0.0.0/2,64.0.0.0/2,128.0.0.0/2"}, "together cover 75% of all IPv4 addresses"),
    ({"admin_cidrs": "32.0.0.0/3"}, "together cover 12% of all IPv4 addresses"),
    ({"admin_cidrs": "198.51.100.0/24,banana"}, "admin_cidrs=198.51.100.0/24,banana: is not an IPv4 CIDR"),
    ({"public_cidrs": "[]"}, "public_cidrs=[]: must list at least one CIDR"),
    ({"dns_servers": "1.1.1"}, "dns_servers=1.1.1: must be IPv4 addresses"),
    ({"storage_size": "0"}, "storage_size=0: must be at least 1"),
    ({"storage_protect": "maybe"}, "storage_protect=maybe: must be true or false"),
    ({"server_group_policy": "affinity"}, "server_group_policy=affinity: must be one of anti-affinity"),
    ({"key_pair": ""}, "key_pair: set exactly one of key_pair"),
    ({"public_key": "ssh-ed25519 AAAA"}, "key_pair=course-key: set exactly one of key_pair"),
    ({"cluster_name": "9lives"}, "cluster_name=9lives: must start with a letter"),
]


def parse(overrides: dict[str, str], stack: str = "demo", unknown: tuple[str, ...] = ()) -> Any:
    return parse_config({**BASE_CONFIG, **overrides}, stack, unknown)


@pytest.mark.parametrize(
    ("overrides", "message"), BAD, ids=[next(iter(o)) + "=" + next(iter(o.values())) for o, _ in BAD]
)
def test_bad_value_names_the_key(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(InfraConfigError) as raised:
        parse(overrides)
    assert message in str(raised.value)
    assert len(raised.value.problems) == 1, raised.value.problems


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"manager_count": "4"}, "manager_count"),
        ({"worker_count": "0"}, "worker_count"),
        ({"private_cidr": "10.20.0.0/33"}, "private_cidr"),
        ({"server_group_policy": "affinity"}, "server_group_policy"),
        ({"admin_cidrs": "[]"}, "admin_cidrs"),
    ],
)
def test_bad_config_fails_before_any_resource_is_declared(overrides: dict[str, str], key: str) -> None:
    error, declared = run_failing({**BASE_CONFIG, **overrides})
    assert isinstance(error, InfraConfigError)
    assert [p.key for p in error.problems] == [key]
    assert declared == []


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InfraConfigError) as raised:
        parse({"manager_count": "2", "worker_count": "0", "server_group_policy": "spread", "admin_cidrs": ""})
    keys = [p.key for p in raised.value.problems]
    assert keys == ["manager_count", "worker_count", "admin_cidrs", "server_group_policy"]
    assert str(raised.value).startswith(f"invalid stack configuration ({PROJECT}:<key>):\n  manager_count=2: ")


def test_unknown_keys_are_typos() -> None:
    assert unknown_keys(["swarmlab:manager_cont", "swarmlab:worker_count", "openstack:cloud"]) == ["manager_cont"]
    with pytest.raises(InfraConfigError, match=r"manager_cont: is not a known key"):
        parse({}, unknown=("manager_cont",))
    error, declared = run_failing({**BASE_CONFIG, "workers": "5"})
    assert "workers: is not a known key" in str(error) and declared == []


@pytest.mark.parametrize("key", ["storage_kind", "manila_share_type"])
def test_a_leftover_manila_key_is_reported_as_unknown(key: str) -> None:
    # Manila is gone: the storage node always serves NFS from its volume. An old stack file that still
    # sets these keys must say so, not silently ignore them.
    assert key not in DEFAULTS
    assert unknown_keys([f"{PROJECT}:{key}", f"{PROJECT}:worker_count"]) == [key]
    error, declared = run_failing({**BASE_CONFIG, key: "server" if key == "storage_kind" else "default"})
    assert isinstance(error, InfraConfigError) and declared == []
    assert [str(p) for p in error.problems] == [f"{key}: is not a known key (see Pulumi.example.yaml)"]


@pytest.mark.parametrize(
    "cidrs", ["203.0.113.7/32", "198.51.100.0/24,192.0.2.0/24", "10.0.0.0/8", "172.16.0.0/12,10.0.0.0/8"]
)
def test_admin_networks_of_a_real_size_are_accepted(cidrs: str) -> None:
    assert parse({"admin_cidrs": cidrs}).admin_cidrs


def test_defaults() -> None:
    config = parse({})
    assert config.cluster_name == "demo"  # the stack name
    assert (config.manager_count, config.worker_count) == (3, 3)
    assert config.private_cidr == ipaddress.IPv4Network("10.20.0.0/24")
    assert config.public_cidrs == (ipaddress.IPv4Network("0.0.0.0/0"),)
    assert config.storage_protect and config.storage_size == 50 and config.storage_volume_type is None
    assert config.server_group_policy == "anti-affinity" and config.availability_zones == ()
    assert config.ssh_user == "root" and config.key_pair == "course-key" and config.public_key is None


def test_lists_parse_from_json_or_commas() -> None:
    as_json = parse({"admin_cidrs": json.dumps(["192.0.2.7/32", "198.51.100.0/24", "192.0.2.7/32"])})
    as_commas = parse({"admin_cidrs": "192.0.2.7/32, 198.51.100.0/24"})
    assert as_json.admin_cidrs == as_commas.admin_cidrs  # repeats dropped
    assert parse({"availability_zones": "nova-1,nova-2"}).availability_zones == ("nova-1", "nova-2")


def _pulumi_value(value: Any) -> str:
    """What the Pulumi runtime hands the program for a stack-file value."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def test_example_stack_file_documents_every_key_and_is_valid() -> None:
    text = EXAMPLE.read_text()
    documented = set(re.findall(rf"^\s*#?\s*{PROJECT}:(\w+):", text, flags=re.MULTILINE))
    assert documented == set(DEFAULTS)
    values = {
        key.removeprefix(f"{PROJECT}:"): _pulumi_value(value)
        for key, value in yaml.safe_load(text)["config"].items()
        if key.startswith(f"{PROJECT}:")
    }
    config = parse_config(values, "example")
    # Uncommented values are the documented defaults (except the two keys that have none).
    for key in values:
        if DEFAULTS[key] is not None:
            assert parse_config({**values, key: DEFAULTS[key] or ""}, "example") == config, key


def test_every_key_has_a_typed_field_and_a_documented_default() -> None:
    assert list(DEFAULTS) == list(InfraConfig.model_fields)
    # A key without a default text is either required or may stay unset (None in the model).
    unset = {key for key, field in InfraConfig.model_fields.items() if not field.is_required()}
    assert unset == {"key_pair", "public_key", "storage_volume_type"}
