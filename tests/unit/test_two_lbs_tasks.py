"""The tasks with two lbs (lb_count 2), end to end with a fake runner: HAProxy on both lbs (each its own
render), keepalived pushed to both (once, then no change), `status` naming the VIP's holder, and the
stack's Prometheus scraping both lbs. With one lb every one of them does exactly what it did before two
lbs existed: the transcripts in tests/unit/golden/ were written by the code before that change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cluster import flows
from cluster.errors import CommandFailed
from cluster.tasks.deploy import config_contents
from cluster.workload import load_workload
from tests.unit.fake_runner import FakeRunner, answer_as_written, fake_session, two_lbs_inventory
from tests.unit.fake_runner import lab_shaped_inventory as one_lb_inventory
from tests.unit.test_render import check_golden

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
