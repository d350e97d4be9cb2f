"""The tasks with two lbs (lb_count 2), end to end with a fake runner: HAProxy on both lbs (each its own
render), keepalived pushed to both (once, then no change), `status` naming the VIP's holder, and the
stack's Prometheus scraping both lbs. With one lb every one of them does exactly what it did before two
lbs existed: the transcripts in tests/unit/golden/ were written by the code before that change."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import flows
from cluster.credentials import VRRP_PASSWORD
from cluster.errors import CommandFailed, SwarmlabError
from cluster.inventory import Node
from cluster.runners import UNREACHABLE, Result
from cluster.tasks.deploy import config_contents
from cluster.tasks.status import rates_report, status_report
from cluster.workload import load_workload
from tests.unit.fake_runner import FakeRunner, answer_as_written, fake_session, two_lbs_inventory
from tests.unit.fake_runner import lab_shaped_inventory as one_lb_inventory
from tests.unit.test_day2_tasks import MANAGER, healthy_swarm, lost_quorum, probe_output
from tests.unit.test_render import check_golden
from tests.unit.test_tasks import fresh_cluster

READS = ("printf 'config_sha", "sha256sum ", "ip -o -4 addr show")  # the facts a push reads first
HEX = re.compile(r"\b[0-9a-fA-F]{64}\b")


def fresh_lbs(runner: FakeRunner) -> FakeRunner:
    """lb nodes with nothing configured yet, and a swarm whose leader serves the registration stack."""
    runner.answer(r"docker info --format '\{\{json .Swarm\}\}'", '{"LocalNodeState":"active","ControlAvailable":true}')
    runner.answer(r"docker stack ls", "registration\n")
    runner.answer(r"echo ready", "ready")
    runner.answer(r"sha256sum", "config_sha=\nsystemd=no\nrunning=no\n")
    return runner


def transcript(runner: FakeRunner, out: str, state: Path) -> str:
    """What a run did, comparable across runs: the commands by node, the files written (their text, with
    the run's own certificate digests masked) and what it printed (without the timings)."""
    lines = [f"$ {c.node}: {c.command}" + (" <stdin>" if c.stdin else "") for c in runner.calls]
    for (node, path), content in sorted(runner.files.items()):
        shown = content.decode() if path.endswith(".cfg.new") else f"{len(content) > 0} bytes"
        lines.append(f"--- {node}:{path}\n{shown}")
    printed = re.sub(r" in \d+\.\ds$", " in Ns", out.replace(str(state), "<state>"), flags=re.MULTILINE)
    return HEX.sub("<sha256>", "\n".join([*lines, "=== printed", printed]))


def test_fab_haproxy_with_one_lb_does_what_it_did_before_two_lbs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = fresh_lbs(FakeRunner(one_lb_inventory()))
    flows.run(flows.HAPROXY, fake_session(runner, tmp_path))
    first = transcript(runner, capsys.readouterr().out, tmp_path)
    again = fresh_lbs(FakeRunner(runner.inventory))
    answer_as_written(again, runner.files)
    flows.run(flows.HAPROXY, fake_session(again, tmp_path))
    second = transcript(again, capsys.readouterr().out, tmp_path)
    check_golden("haproxy-task-one-lb.txt", f"{first}\n=== a second run\n{second}")


def test_prometheus_with_one_lb_is_configured_as_before_two_lbs() -> None:
    contents = config_contents(one_lb_inventory(), load_workload("registration", "lab"))
    name, text = contents["prometheus_yml"]
    check_golden("prometheus-one-lb.yml", f"# {name}\n{text}")


def test_fab_haproxy_configures_both_lbs_each_with_its_own_exporter_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = fresh_lbs(FakeRunner(two_lbs_inventory()))
    flows.run(flows.HAPROXY, fake_session(runner, tmp_path))
    one, two = (runner.files[(lb, "/etc/haproxy/haproxy.cfg.new")].decode() for lb in ("lb-1", "lb-2"))
    assert "bind 10.20.0.5:8405" in one and "10.20.0.7" not in one
    assert "bind 10.20.0.7:8405" in two and "10.20.0.5" not in two
    # Apart from the exporter's address, the two are the same configuration (the same certificate too).
    assert one.replace("10.20.0.5", "X") == two.replace("10.20.0.7", "X")
    site = [runner.files[(lb, "/etc/haproxy/tls/site.pem")] for lb in ("lb-1", "lb-2")]
    assert site[0] == site[1]
    # Both read first; then each validated on its own node before it replaced the running one, lb-1
    # wholly before lb-2.
    changing = [c.node for c in runner.calls if c.node.startswith("lb") and not c.command.startswith(READS)]
    assert changing == sorted(changing) and set(changing) == {"lb-1", "lb-2"}
    for lb in ("lb-1", "lb-2"):
        checks = [c.command for c in runner.calls if c.node == lb and "haproxy" in c.command]
        assert checks.index("haproxy -c -f /etc/haproxy/haproxy.cfg.new") < next(
            i for i, c in enumerate(checks) if c.startswith("mv ")
        )
    out = capsys.readouterr().out
    assert "validate on each lb node (lb-1, lb-2)" in out
    assert "changed: HAProxy started on lb-1" in out and "changed: HAProxy started on lb-2" in out
    # A second run changes nothing on either, and says so for each.
    again = fresh_lbs(FakeRunner(runner.inventory))
    answer_as_written(again, runner.files)
    timings = flows.run(flows.HAPROXY, fake_session(again, tmp_path)).timings
    assert not again.files and not timings.changed
    out = capsys.readouterr().out
    assert "lb-1: /etc/haproxy/haproxy.cfg is current" in out and "lb-2: /etc/haproxy/haproxy.cfg is current" in out


def test_a_configuration_lb_1_refuses_leaves_lb_2_untouched(tmp_path: Path) -> None:
    runner = fresh_lbs(FakeRunner(two_lbs_inventory()))
    runner.answer(r"haproxy -c", "[ALERT] config : parsing error", exit_code=1, node="lb-1")
    with pytest.raises(CommandFailed, match="on lb-1"):
        flows.run(flows.HAPROXY, fake_session(runner, tmp_path))
    assert not [c for c in runner.calls if c.node == "lb-2" and not c.command.startswith(READS)]


def test_prometheus_scrapes_both_lbs_exporters() -> None:
    _, text = config_contents(two_lbs_inventory(), load_workload("registration", "lab"))["prometheus_yml"]
    [job] = [j for j in yaml.safe_load(text)["scrape_configs"] if j["job_name"] == "haproxy"]
    assert [(g["targets"], g["labels"]) for g in job["static_configs"]] == [
        (["10.20.0.5:8405"], {"node": "lb-1"}),
        (["10.20.0.7:8405"], {"node": "lb-2"}),
    ]


KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
PAIR = {"lb-1": ("10.20.0.5", "10.20.0.7", "ens3"), "lb-2": ("10.20.0.7", "10.20.0.5", "ens4")}


def with_interfaces(runner: FakeRunner) -> FakeRunner:
    """Each lb's private address on an interface of its own name (the fact keepalived's file is made from)."""
    for lb, (address, _, interface) in PAIR.items():
        runner.answer(rf"ip -o -4 addr show to {address}$", f"2: {interface}    inet {address}/24 brd x", node=lb)
    return runner


def password(state: Path) -> str:
    return str(json.loads((state / "static" / "demo" / "credentials").read_text())[VRRP_PASSWORD])


def test_bootstrap_with_two_lbs_pushes_keepalived_to_both_after_haproxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = with_interfaces(fresh_cluster())
    runner.inventory = two_lbs_inventory()
    booted = flows.run(flows.BOOTSTRAP, fake_session(runner, tmp_path))
    phases = [p.name for p in booted.timings.phases]
    assert phases[phases.index("haproxy") + 1] == "keepalived"
    secret = password(tmp_path)
    assert len(secret) == 8
    for lb, (address, peer, interface) in PAIR.items():
        text = runner.files[(lb, f"{KEEPALIVED_CONF}.new")].decode()
        assert runner.modes[(lb, f"{KEEPALIVED_CONF}.new")] == 0o600
        assert f"unicast_src_ip {address}\n" in text and f"unicast_peer {{\n        {peer}\n" in text
        assert f"interface {interface}\n" in text and f"10.20.0.4/24 dev {interface}\n" in text
        assert f"auth_pass {secret}\n" in text
        done = [c.command for c in runner.calls if c.node == lb and "keepalived" in c.command]
        assert done[1:] == [
            "mkdir -p /etc/keepalived && chmod 700 /etc/keepalived",
            f"keepalived -t -f {KEEPALIVED_CONF}.new",
            f"mv {KEEPALIVED_CONF}.new {KEEPALIVED_CONF}",
            f"keepalived -f {KEEPALIVED_CONF} -p /run/keepalived.pid </dev/null >/dev/null 2>&1",
            "(kill -0 $(head -n1 /run/keepalived.pid)) >/dev/null 2>&1 && echo ready || echo no",
        ]
        assert done[0].startswith("printf 'config_sha") and "ip -o -4 addr show to" not in done[0]
    # The password is in the files and nowhere else: no command, no stdin, no output.
    assert not [c for c in runner.calls if secret in c.command or secret in (c.stdin or "")]
    out = capsys.readouterr().out
    assert secret not in out
    assert "changed: keepalived started on lb-1" in out and "changed: keepalived started on lb-2" in out


def test_keepalived_a_second_time_changes_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = with_interfaces(fresh_lbs(FakeRunner(two_lbs_inventory())))
    flows.run(flows.KEEPALIVED, fake_session(runner, tmp_path))
    assert {node for node, path in runner.files if path.startswith("/etc/keepalived/")} == {"lb-1", "lb-2"}
    again = with_interfaces(fresh_lbs(FakeRunner(runner.inventory)))
    answer_as_written(again, runner.files)
    capsys.readouterr()
    timings = flows.run(flows.KEEPALIVED, fake_session(again, tmp_path)).timings
    assert not again.files and not timings.changed
    assert not [c for c in again.calls if "keepalived" in c.command and not c.command.startswith(READS)]
    out = capsys.readouterr().out
    assert f"lb-1: {KEEPALIVED_CONF} is current and keepalived runs" in out
    assert f"lb-2: {KEEPALIVED_CONF} is current and keepalived runs" in out
    assert "<== keepalived: no change" in out


def test_a_changed_keepalived_conf_is_reloaded_not_restarted(tmp_path: Path) -> None:
    runner = with_interfaces(fresh_lbs(FakeRunner(two_lbs_inventory())))
    runner.answer(r"sha256sum /etc/keepalived", "config_sha=old\nsystemd=yes\nrunning=yes\n")
    flows.run(flows.KEEPALIVED, fake_session(runner, tmp_path))
    assert runner.commands(r"^systemctl reload keepalived$") == ["systemctl reload keepalived"] * 2
    assert not runner.commands(r"restart keepalived")


def test_the_vrrp_password_is_masked_in_an_error(tmp_path: Path) -> None:
    runner = with_interfaces(fresh_lbs(FakeRunner(two_lbs_inventory())))
    flows.run(flows.KEEPALIVED, fake_session(runner, tmp_path))  # makes the password
    secret = password(tmp_path)
    failing = with_interfaces(fresh_lbs(FakeRunner(runner.inventory)))
    failing.answer(r"keepalived -t", f"(Line 32) auth_pass {secret} is not valid", exit_code=1, node="lb-2")
    with pytest.raises(CommandFailed) as raised:
        flows.run(flows.KEEPALIVED, fake_session(failing, tmp_path))
    assert raised.value.host == "lb-2" and secret not in str(raised.value) and "auth_pass ***" in str(raised.value)
    # lb-1 was done before lb-2 was tried, and lb-2's running configuration was not replaced.
    assert failing.commands(rf"^mv {KEEPALIVED_CONF}") == [f"mv {KEEPALIVED_CONF}.new {KEEPALIVED_CONF}"]


def test_an_lb_without_its_private_address_on_an_interface_is_named(tmp_path: Path) -> None:
    runner = fresh_lbs(FakeRunner(two_lbs_inventory()))
    runner.answer(r"ip -o -4 addr show to 10.20.0.5$", "2: ens3    inet 10.20.0.5/24 brd x", node="lb-1")
    with pytest.raises(SwarmlabError, match=r"on lb-2: no interface holds its private address 10.20.0.7"):
        flows.run(flows.KEEPALIVED, fake_session(runner, tmp_path))
    assert not runner.files


def test_a_dry_run_writes_nothing_and_prints_no_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = with_interfaces(fresh_lbs(FakeRunner(two_lbs_inventory())))
    timings = flows.run(flows.KEEPALIVED, fake_session(runner, tmp_path, dry_run=True)).timings
    out = capsys.readouterr().out
    assert not runner.files and timings.would_change and password(tmp_path) not in out
    assert f"would write {KEEPALIVED_CONF}.new on lb-2" in out


def test_with_one_lb_bootstrap_has_no_keepalived_step_and_fab_keepalived_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = fresh_cluster()
    booted = flows.run(flows.BOOTSTRAP, fake_session(runner, tmp_path))
    assert "keepalived" not in [p.name for p in booted.timings.phases]
    assert not runner.commands("keepalived|ip -o -4 addr")
    capsys.readouterr()
    timings = flows.run(flows.KEEPALIVED, fake_session(runner, tmp_path)).timings
    assert not timings.changed and "keepalived is not used (lb_count: 2 makes a pair)" in capsys.readouterr().out


NOW = datetime(2026, 12, 1, tzinfo=UTC)


def with_quorum(runner: FakeRunner) -> FakeRunner:
    runner.answer(r"leader=yes", probe_output(MANAGER, leader=True))
    return runner


def test_status_with_one_lb_is_what_it_was_before_two_lbs() -> None:
    runners = [with_quorum(healthy_swarm()), lost_quorum()]
    reports = [status_report(runner, NOW) for runner in runners]
    check_golden("status-one-lb.txt", "\n=== without quorum\n".join(reports))
    assert not [c for runner in runners for c in runner.calls if c.node.startswith("lb")]


def two_lbs_status(lb1: tuple[str, int], lb2: tuple[str, int]) -> str:
    """`status` of a healthy swarm with two lbs, each answering `ip -o -4 addr show to VIP` so."""
    runner = with_quorum(healthy_swarm())
    runner.inventory = two_lbs_inventory()
    for lb, (output, code) in (("lb-1", lb1), ("lb-2", lb2)):
        runner.answer(r"^ip -o -4 addr show to 10\.20\.0\.4$", output, exit_code=code, node=lb)
    return status_report(runner, NOW)


HOLDS = ("2: ens3    inet 10.20.0.4/24 scope global secondary ens3", 0)
FREE = ("", 0)


def test_status_names_the_lb_that_holds_the_vip() -> None:
    report = two_lbs_status(FREE, HOLDS)
    assert (
        "LB    ADDRESS    ANSWERS  HOLDS THE VIP 10.20.0.4\n"
        "lb-1  10.20.0.5  yes      no\n"
        "lb-2  10.20.0.7  yes      yes (ens3)\n"
        "the virtual IP 10.20.0.4 is on lb-2\n"
    ) in report
    assert "WARN" not in report


@pytest.mark.parametrize(
    ("lb1", "lb2", "warning"),
    [
        (HOLDS, HOLDS, "WARN: lb-1 and lb-2 both hold the virtual IP 10.20.0.4: they do not hear each other's VRRP"),
        (FREE, FREE, "WARN: no lb holds the virtual IP 10.20.0.4: nothing answers at the public address"),
        (("ssh: connect failed", 255), FREE, "WARN: no lb that answers holds the virtual IP 10.20.0.4 (lb-1 did not"),
    ],
)
def test_status_flags_a_vip_held_by_none_or_both(lb1: tuple[str, int], lb2: tuple[str, int], warning: str) -> None:
    report = two_lbs_status(lb1, lb2)
    assert warning in report and "is on lb-" not in report


def test_status_with_one_silent_lb_still_names_the_holder() -> None:
    report = two_lbs_status(HOLDS, ("ssh: connect failed", 255))
    assert "lb-2  10.20.0.7  no       ? (exit 255: ssh: connect failed)" in report
    assert "the virtual IP 10.20.0.4 is on lb-1" in report and "WARN" not in report


def test_status_asks_prometheus_from_lb_2_when_lb_1_does_not_answer(tmp_path: Path) -> None:
    runner = with_quorum(healthy_swarm())
    runner.inventory = two_lbs_inventory()
    runner.answer(r"docker stack ls", "registration\n")
    runner.answer(r"api/v1/query", "ssh: connect to host 10.20.0.5 port 22: No route to host", 255, node="lb-1")
    original = runner.run

    def run(node: Node, command: str, **kwargs: Any) -> Result:
        if node.name == "lb-1":  # unreachable: SSH's failure, no exit code
            raise CommandFailed(node.name, command, None, "Channel open failed", UNREACHABLE)
        return original(node, command, **kwargs)

    runner.run = run  # type: ignore[method-assign]
    runner.answer(r"api/v1/query", '{"status": "success", "data": {"result": []}}', node="lb-2")
    report = rates_report(fake_session(runner, tmp_path), runner.inventory.node("manager-1"))
    assert "no request rates yet" in report
    assert [c.node for c in runner.calls if "api/v1/query" in c.command] == ["lb-2"]


def test_an_interface_name_keepalived_could_not_take_is_refused_with_the_lb_named(tmp_path: Path) -> None:
    runner = with_interfaces(fresh_lbs(FakeRunner(two_lbs_inventory())))
    runner.answer(r"ip -o -4 addr show to 10.20.0.7$", "2: ens4;reboot    inet 10.20.0.7/24", node="lb-2")
    with pytest.raises(SwarmlabError, match=r"keepalived on lb-2: 'ens4;reboot' is not a network interface name"):
        flows.run(flows.KEEPALIVED, fake_session(runner, tmp_path))
    assert not runner.files
