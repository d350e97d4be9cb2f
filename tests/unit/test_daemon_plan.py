"""Pushing a daemon's config: validate before swap, reload (not restart) a running one, no-op when current."""

from __future__ import annotations

from cluster.daemon import DaemonFacts, parse_facts, plan_push, sha256
from haproxy.plan import HAPROXY
from nfs.model import GANESHA

CONFIG = "global\n    master-worker\n"


def test_facts_parser() -> None:
    assert parse_facts("config_sha=abc\nsystemd=no\nrunning=yes\n") == DaemonFacts("abc", systemd=False, running=True)


def test_current_config_on_a_running_daemon_needs_nothing() -> None:
    assert plan_push(HAPROXY, DaemonFacts(sha256(CONFIG), False, True), CONFIG) == ()


def test_new_haproxy_config_is_uploaded_validated_swapped_then_reloaded_with_sigusr2() -> None:
    steps = plan_push(HAPROXY, DaemonFacts("old", systemd=False, running=True), CONFIG)
    assert steps[0].upload
    assert steps[1].command.startswith("haproxy -c") and steps[1].command.endswith(".new")
    assert steps[2].command.startswith("mv ")
    assert "kill -USR2" in steps[3].command
    assert [s.change for s in steps] == [False, False, True, True]


def test_systemd_hosts_reload_through_systemd() -> None:
    steps = plan_push(HAPROXY, DaemonFacts("old", systemd=True, running=True), CONFIG)
    assert steps[-1].command == "systemctl reload haproxy"


def test_stopped_haproxy_is_started_in_master_worker_mode_even_if_config_is_current() -> None:
    [step] = plan_push(HAPROXY, DaemonFacts(sha256(CONFIG), systemd=False, running=False), CONFIG)
    assert "haproxy -W -D" in step.command


def test_ganesha_has_no_validator_and_restarts_to_reload() -> None:
    steps = plan_push(GANESHA, DaemonFacts("old", systemd=False, running=True), "EXPORT {}\n")
    assert [s.upload for s in steps] == [True, False, False]
    assert "ganesha.nfsd" in steps[-1].command
