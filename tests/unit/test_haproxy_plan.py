"""The HAProxy push plan: validate before swap, reload (not restart) a running master, no-op when current."""

from __future__ import annotations

from haproxy.plan import HAProxyFacts, parse_facts, plan_haproxy, sha256

CONFIG = "global\n    master-worker\n"


def test_facts_parser() -> None:
    facts = parse_facts("config_sha=abc\nsystemd=no\nrunning=yes\n")
    assert facts == HAProxyFacts("abc", systemd=False, running=True)


def test_current_config_on_a_running_haproxy_needs_nothing() -> None:
    assert plan_haproxy(HAProxyFacts(sha256(CONFIG), False, True), CONFIG) == ()


def test_new_config_is_uploaded_validated_swapped_then_reloaded_with_sigusr2() -> None:
    steps = plan_haproxy(HAProxyFacts("old", systemd=False, running=True), CONFIG)
    assert steps[0].upload
    assert steps[1].command.startswith("haproxy -c")
    assert steps[2].command.startswith("mv ")
    assert "kill -USR2" in steps[3].command
    assert [s.change for s in steps] == [False, False, True, True]


def test_systemd_hosts_reload_through_systemd() -> None:
    steps = plan_haproxy(HAProxyFacts("old", systemd=True, running=True), CONFIG)
    assert steps[-1].command == "systemctl reload haproxy"


def test_stopped_haproxy_is_started_in_master_worker_mode_even_if_config_is_current() -> None:
    [step] = plan_haproxy(HAProxyFacts(sha256(CONFIG), systemd=False, running=False), CONFIG)
    assert "haproxy -W -D" in step.command
