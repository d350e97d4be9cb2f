"""Pushing a daemon's config: validate before swap, reload (not restart) a running one, no-op when current."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from cluster.facts.daemons import DaemonFacts, parse_daemon_facts
from cluster.operations import Parallel, Run, Wait, Write
from cluster.plans.daemon import plan_push, sha256
from haproxy.model import DAEMON as HAPROXY
from keepalived.model import DAEMON as KEEPALIVED
from nfs.model import DAEMON as GANESHA
from nfs.model import PID_FILE as GANESHA_PID
from registry import model as registry
from rendering.daemon import restart_by_pid

CONFIG = "global\n    master-worker\n"


def test_facts_parser() -> None:
    facts = parse_daemon_facts("config_sha=abc\nsystemd=no\nrunning=yes\n")
    assert facts == DaemonFacts("abc", systemd=False, running=True)


def test_current_config_on_a_running_daemon_needs_nothing() -> None:
    plan = plan_push("lb-1", HAPROXY, DaemonFacts(sha256(CONFIG), False, True), CONFIG)
    assert plan.operations == () and not plan.changes
    assert plan.notes == ("/etc/haproxy/haproxy.cfg is current and HAProxy runs",)


def test_new_haproxy_config_is_uploaded_validated_swapped_then_reloaded_with_sigusr2() -> None:
    ops = plan_push("lb-1", HAPROXY, DaemonFacts("old", systemd=False, running=True), CONFIG).operations
    assert isinstance(ops[0], Write) and ops[0].path.endswith(".new") and ops[0].content == CONFIG.encode()
    assert isinstance(ops[1], Run) and ops[1].command.startswith("haproxy -c") and ops[1].command.endswith(".new")
    assert isinstance(ops[2], Run) and ops[2].command.startswith("mv ")
    assert isinstance(ops[3], Run) and "kill -USR2" in ops[3].command
    assert isinstance(ops[4], Wait) and "/stats" in ops[4].command, "a reload is done when HAProxy answers again"
    assert [op.changes for op in ops] == [False, False, True, True, False]
    assert {op.node for op in ops if not isinstance(op, Parallel)} == {"lb-1"}


def test_systemd_hosts_reload_through_systemd() -> None:
    plan = plan_push("lb-1", HAPROXY, DaemonFacts("old", systemd=True, running=True), CONFIG)
    assert plan.runs[-1].command == "systemctl reload haproxy"


def test_stopped_haproxy_is_started_in_master_worker_mode_even_if_config_is_current() -> None:
    plan = plan_push("lb-1", HAPROXY, DaemonFacts(sha256(CONFIG), systemd=False, running=False), CONFIG)
    [start] = plan.runs
    assert "haproxy -W -D" in start.command and plan.changes


def test_ganesha_has_no_validator_and_restarts_to_reload() -> None:
    plan = plan_push("storage-1", GANESHA, DaemonFacts("old", systemd=False, running=True), "EXPORT {}\n")
    assert [type(op).__name__ for op in plan.operations] == ["Write", "Run", "Run"]
    assert "ganesha.nfsd" in plan.runs[-1].command


def test_a_restart_by_pid_starts_the_daemon_again_only_once_the_old_one_is_gone(tmp_path: Path) -> None:
    # A daemon that takes half a second to stop: started at once, the new one would find it still there.
    old = subprocess.Popen(["sh", "-c", "trap 'sleep 0.5; exit 0' TERM; while :; do sleep 0.1; done"])
    threading.Thread(target=old.wait, daemon=True).start()  # reaped once it exits, as init would
    pid_file = tmp_path / "daemon.pid"
    pid_file.write_text(f"{old.pid}\n")
    marker = tmp_path / "started"
    start = f"(kill -0 {old.pid} 2>/dev/null && echo too-early || echo after-the-old-one) > {marker}"
    try:
        subprocess.run(["sh", "-c", restart_by_pid(str(pid_file), start)], check=True, timeout=10)
    finally:
        old.kill()
    assert marker.read_text() == "after-the-old-one\n"


def test_ganesha_and_the_registry_restart_through_the_one_helper() -> None:
    assert restart_by_pid("/run/d.pid", "d --start") == (
        "pid=$(head -n1 /run/d.pid); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.2; done; d --start"
    )
    assert GANESHA.reload == restart_by_pid(GANESHA_PID, GANESHA.start)
    spec = registry.daemon("10.20.0.6:5000")
    assert spec.reload == restart_by_pid(registry.PID_FILE, registry.START)


def test_a_config_holding_a_secret_is_uploaded_mode_600_and_others_stay_644() -> None:

    for daemon, mode in ((KEEPALIVED, 0o600), (HAPROXY, 0o644), (GANESHA, 0o644)):
        [upload] = [
            op
            for op in plan_push("lb-1", daemon, DaemonFacts("old", False, True), CONFIG).operations
            if isinstance(op, Write)
        ]
        assert (upload.path, upload.mode) == (daemon.new_path, mode), daemon.name
    # Validated before the swap with Debian's `keepalived -t`, then re-read on SIGHUP (the VIP stays put).
    ops = plan_push("lb-1", KEEPALIVED, DaemonFacts("old", False, True), CONFIG).operations
    commands = [op.command for op in ops if isinstance(op, Run)]
    assert commands[0] == "keepalived -t -f /etc/keepalived/keepalived.conf.new"
    assert commands[-1] == 'kill -HUP "$(head -n1 /run/keepalived.pid)"'
