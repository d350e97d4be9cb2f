"""maintain-nodes: the order and the checks (pure), and the task end to end with the fake runner: a
manager refused while another is down, the stop at the first node that does not come back, the dry run,
a stale daemon.json written and applied by a reboot, the options refused before anything is asked."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from cluster.config import Config, parse_config
from cluster.errors import OptionErrors, SwarmlabError
from cluster.executor import Executor
from cluster.facts.daemons import BOOT_ID
from cluster.facts.swarm import parse_nodes
from cluster.inventory import Node, Role
from cluster.plans import maintenance, nodes
from cluster.plans.maintenance import (
    MaintenanceRefused,
    MaintenanceStopped,
    Selection,
    Step,
    Visit,
    chosen_nodes,
    describe_maintenance,
    parse_selection,
    plan_maintenance,
    refusal,
    rendered_daemon_json,
    sha256,
)
from cluster.progress import PhaseResult
from cluster.providers import PROVIDER_CLASSES, provider_named
from cluster.providers.static import StaticProvider
from cluster.runners import Result
from cluster.session import Session
from cluster.tasks.maintenance import maintain_nodes
from tests.unit.fake_runner import FakeRunner, two_lbs_inventory
from tests.unit.fake_runner import lab_shaped_inventory as inventory
from tests.unit.recorded import recorded

MANAGER = recorded("swarm_manager")
SERVICES = recorded("services")
NODES = recorded("nodes")
NODE_IDS = {n.hostname: n.node_id for n in parse_nodes(NODES)}
CHANGING = r"node update|systemctl reboot|apt-get|service update"


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait the fake cannot satisfy fails in seconds, not in the minutes a real node gets."""
    monkeypatch.setattr(maintenance, "BACK_TIMEOUT", 2)
    monkeypatch.setattr(maintenance, "BACK_INTERVAL", 0.05)
    monkeypatch.setattr(maintenance, "MOVE_TIMEOUT", 2)
    monkeypatch.setattr(nodes, "MOVE_TIMEOUT", 2)


def nodes_output(
    drained: Set[str],
    down: Set[str] = frozenset(),
    unreachable: Set[str] = frozenset(),
    unknown: Set[str] = frozenset(),
) -> str:
    """The recorded node list, the nodes in `drained` drained and the others active, some down or of a
    state the leader does not know, or (managers) unreachable."""
    rows = []
    for line in NODES.splitlines():
        row = json.loads(line)
        row["availability"] = "drain" if row["hostname"] in drained else "active"
        if row["hostname"] in down:
            row["state"] = "down"
        if row["hostname"] in unknown:
            row["state"] = "unknown"
        if row["hostname"] in unreachable:
            row["reachability"], row["leader"] = "unreachable", False
        rows.append(json.dumps(row))
    return "\n".join(rows)


@dataclass
class Swarm(FakeRunner):
    """A fake that remembers `docker node update --availability`: the node lists it answers follow."""

    availability: dict[str, str] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    unreachable: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    unknown_reads: int = 0  # node lists that still show `unknown` Unknown (a new leader's first minute)
    services: str = SERVICES

    def run(
        self,
        node: Node,
        command: str,
        *,
        check: bool = True,
        stdin: str | IO[str] | None = None,
        timeout: float | None = None,
        secrets: Sequence[str] = (),
        hint: str = "",
    ) -> Result:
        self.react(node, command)
        return super().run(node, command, check=check, stdin=stdin, timeout=timeout, secrets=secrets, hint=hint)

    def react(self, node: Node, command: str) -> None:
        """What the swarm does about a command, before the scripted answers are looked up."""
        found = re.search(r"node update --availability (\w+) (\w+)", command)
        if found:
            name = next(h for h, i in NODE_IDS.items() if i == found.group(2))
            self.availability[name] = found.group(1)
        drained = {n for n, a in self.availability.items() if a == "drain"}
        if command.startswith("ids=$(docker node ls -q)") and self.unknown:
            self.unknown_reads -= 1
            if self.unknown_reads < 0:
                self.unknown = set()
        listed = nodes_output(drained, self.down, self.unreachable, self.unknown)
        self.answer(r"^ids=\$\(docker node ls -q\)", listed)
        self.answer(r"^ids=\$\(docker service ls -q\)", f"{self.services}\n---\n{listed}")


def swarm(stale: tuple[str, ...] = ()) -> Swarm:
    runner = Swarm(inventory())
    for name, row in ((r["hostname"], r) for r in map(json.loads, NODES.splitlines())):
        runner.availability[name] = row["availability"]
    runner.answer(r"docker info --format '\{\{json .Swarm\}\}'", MANAGER)
    runner.answer(r"docker info --format '\{\{.Swarm.LocalNodeState\}\}'", "active")
    for node in runner.inventory.swarm_nodes:
        current = "0" * 64 if node.name in stale else sha256(rendered_daemon_json(node))
        runner.answer(r"sha256sum /etc/docker/daemon.json", current, node=node.name)
    return runner


@dataclass
class Rebooting(StaticProvider):
    """Reboots nothing: records which node it was asked to reboot, and forgets its connection."""

    rebooted: list[str] = field(default_factory=list)
    calls_before: list[int] = field(default_factory=list)  # how many commands had run at each reboot

    def reboot_node(self, config: Config, node: Node, executor: Executor, progress: PhaseResult) -> None:
        self.rebooted.append(node.name)
        assert isinstance(executor.runner, FakeRunner)
        self.calls_before.append(len(executor.runner.calls))
        executor.runner.forget(node)
        progress.changed(f"{node.name} rebooted")


def session(runner: FakeRunner, tmp_path: Path, provider: Rebooting, dry_run: bool = False) -> Session:
    return Session(parse_config({"state_dir": str(tmp_path)}), provider, runner, dry_run)


def drains(runner: FakeRunner, availability: str) -> list[str]:
    ids = {i: h for h, i in NODE_IDS.items()}
    return [ids[c.split()[-1]] for c in runner.commands(rf"node update --availability {availability} ")]


# --- the order and the options (pure) ---------------------------------------------------------------------


def test_workers_go_first_then_managers_then_the_lb_whatever_order_they_are_named_in() -> None:
    named = chosen_nodes(Selection(("lb-1", "manager-2", "worker-3", "worker-1")), inventory())
    assert [n.name for n in named] == ["worker-1", "worker-3", "manager-2", "lb-1"]
    every = chosen_nodes(Selection(), inventory())
    assert [n.name for n in every] == ["worker-1", "worker-2", "worker-3", "manager-1", "manager-2", "manager-3"]
    assert [n.name for n in chosen_nodes(Selection(role=Role.LB), inventory())] == ["lb-1"]


def test_each_role_gets_its_steps_and_a_manager_is_neither_drained_nor_activated() -> None:
    nodes = chosen_nodes(Selection(("worker-1", "manager-1", "lb-1")), inventory())
    plan = plan_maintenance(nodes, "apt-get -y upgrade", True, {})
    steps = {v.node: v.steps for v in plan.visits}
    assert steps["worker-1"] == (
        Step.DRAIN,
        Step.COMMAND,
        Step.REBOOT,
        Step.BACK,
        Step.ACTIVATE,
        Step.CONVERGE,
    )
    assert steps["manager-1"] == (Step.COMMAND, Step.REBOOT, Step.BACK, Step.CONVERGE)
    assert steps["lb-1"] == (Step.COMMAND, Step.REBOOT, Step.BACK)
    # A stale daemon.json is written, then applied by a reboot even without --reboot; a worker drained
    # before the run stays drained.
    worker = chosen_nodes(Selection(("worker-2",)), inventory())
    stale = plan_maintenance(worker, "", False, {"worker-2": True}, drained_workers=["worker-2"])
    assert stale.visits[0].steps == (Step.DRAIN, Step.ENGINE_CONFIG, Step.REBOOT, Step.BACK, Step.CONVERGE)


@pytest.mark.parametrize(
    ("nodes", "role", "command", "reboot", "problem"),
    [
        ("worker-1", "worker", "", True, "--nodes=worker-1: is given with --role"),
        ("", None, "", True, "names no node"),
        (" , ", None, "", True, "names no node"),
        ("worker-1,worker-1", None, "", True, "names a node twice"),
        (None, "storage", "", True, "--role=storage: is not a role maintain-nodes takes"),
        (None, "worker", "  ", False, "nothing to do"),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    nodes: str | None, role: str | None, command: str, reboot: bool, problem: str
) -> None:
    with pytest.raises(OptionErrors, match=re.escape(problem)):
        parse_selection(nodes, role, command, reboot)


def test_good_options_parse() -> None:
    assert parse_selection("worker-1, worker-2", None, "", True) == Selection(("worker-1", "worker-2"))
    assert parse_selection(None, "manager", "uptime", False) == Selection(role=Role.MANAGER)


def test_an_unknown_node_is_refused_with_the_nodes_it_may_name(tmp_path: Path) -> None:
    runner = swarm()
    with pytest.raises(OptionErrors, match=r"worker-9: not a node(.|\n)*storage-1 is not(.|\n)*worker-1, worker-2"):
        maintain_nodes(session(runner, tmp_path, Rebooting()), Selection(("worker-9",)), reboot=True)
    with pytest.raises(OptionErrors, match="storage-1: not a node"):
        maintain_nodes(session(runner, tmp_path, Rebooting()), Selection(("storage-1",)), reboot=True)
    assert runner.calls == []


def test_a_manager_may_go_down_only_while_every_other_manager_is_ready_and_reachable() -> None:
    manager = Visit("manager-1", Role.MANAGER, (Step.REBOOT,))
    healthy = parse_nodes(nodes_output({"manager-1", "manager-2", "manager-3"}))
    assert refusal(manager, healthy) is None
    down = parse_nodes(nodes_output({"manager-1", "manager-2", "manager-3"}, down={"manager-3"}))
    reason = refusal(manager, down)
    assert reason is not None and "manager-3 (down" in reason and "Raft majority" in reason
    unreachable = parse_nodes(nodes_output({"manager-1", "manager-2", "manager-3"}, unreachable={"manager-2"}))
    assert "manager-2 (ready, unreachable)" in (refusal(manager, unreachable) or "")
    active = parse_nodes(nodes_output({"manager-2", "manager-3"}))
    assert "manager-1 is active, not drained" in (refusal(manager, active) or "")
    alone = tuple(n for n in healthy if n.hostname in ("manager-1", "worker-1"))
    assert "one of 1 managers" in (refusal(manager, alone) or "")
    worker = Visit("worker-1", Role.WORKER, (Step.DRAIN,))
    assert "worker-1 is down" in (refusal(worker, parse_nodes(nodes_output(set(), down={"worker-1"}))) or "")


# --- the task with the fake runner -----------------------------------------------------------------------


def test_a_rolling_reboot_of_the_workers_drains_reboots_and_activates_each_in_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner, provider = swarm(), Rebooting()
    done = session(runner, tmp_path, provider)
    maintain_nodes(done, Selection(role=Role.WORKER), reboot=True)
    assert provider.rebooted == runner.forgotten == ["worker-1", "worker-2", "worker-3"]
    assert drains(runner, "drain") == drains(runner, "active") == ["worker-1", "worker-2", "worker-3"]
    # Each worker is active again before the next one is drained.
    order = [c for c in runner.commands(r"node update --availability")]
    assert [o.split()[4] for o in order] == ["drain", "active"] * 3
    assert [p.name for p in done.timings.phases] == [
        "maintain-checks",
        "maintain-worker-1",
        "maintain-worker-2",
        "maintain-worker-3",
        "rebalance",
    ]
    assert not runner.files  # every daemon.json is current


def test_a_manager_is_not_taken_down_while_another_manager_is_down(tmp_path: Path) -> None:
    runner, provider = swarm(), Rebooting()
    runner.down, runner.unreachable = {"manager-3"}, {"manager-3"}
    with pytest.raises(MaintenanceRefused, match=r"changed nothing(.|\n)*manager-3 \(down, unreachable\)"):
        maintain_nodes(session(runner, tmp_path, provider), Selection(role=Role.MANAGER), command="apt-get -y upgrade")
    assert provider.rebooted == [] and not runner.commands(CHANGING) and not runner.files


def test_a_worker_whose_drain_would_strand_a_service_is_refused_before_anything_changes(tmp_path: Path) -> None:
    runner, provider = swarm(), Rebooting()
    email = next(line for line in SERVICES.splitlines() if '"name":"registration_email"' in line)
    pinned = email.replace('"Constraints":["node.role == worker"]', '"Constraints":["node.hostname == worker-2"]')
    assert pinned != email
    runner.services = SERVICES.replace(email, pinned)
    with pytest.raises(MaintenanceRefused, match=r"changed nothing(.|\n)*draining worker-2 would leave no node for"):
        maintain_nodes(session(runner, tmp_path, provider), Selection(role=Role.WORKER), reboot=True)
    assert provider.rebooted == [] and not runner.commands(CHANGING)


def test_a_rebooted_manager_is_waited_for_from_another_manager(tmp_path: Path) -> None:
    runner, provider = swarm(), Rebooting()
    maintain_nodes(session(runner, tmp_path, provider), Selection(("manager-1",)), reboot=True)
    assert provider.rebooted == ["manager-1"] and not drains(runner, "drain") and not drains(runner, "active")
    after = runner.calls[provider.calls_before[0] :]
    listed_on = [c.node for c in after if c.command.startswith("ids=$(docker node ls -q)")]
    assert listed_on[0] == "manager-2"  # the wait until manager-1 is listed Ready and reachable again
    assert after[0].node == "manager-1" and "LocalNodeState" in after[0].command  # its own engine first


def test_after_a_manager_the_run_waits_until_the_leader_knows_every_node_before_the_next_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in the lab: manager-1 (the leader) restarted, the new leader listed manager-2 Unknown for about a
    minute, and the next manager's check refused it. Now manager-1's visit waits until every state is known."""
    runner, provider = swarm(), Rebooting()
    real = provider.reboot_node

    def reboot_and_elect(config: Config, node: Node, executor: Executor, progress: PhaseResult) -> None:
        real(config, node, executor, progress)
        if node.name == "manager-1":
            runner.unknown, runner.unknown_reads = {"manager-2", "worker-1"}, 4

    monkeypatch.setattr(provider, "reboot_node", reboot_and_elect)
    maintain_nodes(session(runner, tmp_path, provider), Selection(("manager-1", "manager-2")), reboot=True)
    assert provider.rebooted == ["manager-1", "manager-2"]
    assert runner.unknown == set()  # every Unknown read was used up before manager-2 went down


def test_a_manager_that_went_down_mid_run_stops_the_run_before_the_next_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """manager-1 is maintained; then manager-3 is found down: manager-2 is refused, untouched."""
    runner, provider = swarm(), Rebooting()
    real = provider.reboot_node

    def reboot_and_lose_manager_3(config: Config, node: Node, executor: Executor, progress: PhaseResult) -> None:
        real(config, node, executor, progress)
        runner.down, runner.unreachable = {"manager-3"}, {"manager-3"}

    monkeypatch.setattr(provider, "reboot_node", reboot_and_lose_manager_3)
    chosen = Selection(("manager-1", "manager-2"))
    with pytest.raises(MaintenanceRefused, match=r"stopped before manager-2, which is untouched(.|\n)*manager-3"):
        maintain_nodes(session(runner, tmp_path, provider), chosen, reboot=True)
    assert provider.rebooted == ["manager-1"]


def test_the_run_stops_at_the_first_node_that_does_not_come_back_leaving_it_drained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "BACK_TIMEOUT", 0.3)
    monkeypatch.setattr(maintenance, "BACK_INTERVAL", 0.05)
    runner, provider = swarm(), Rebooting()
    runner.answer(r"docker info --format '\{\{.Swarm.LocalNodeState\}\}'", "", exit_code=255, node="worker-2")
    with pytest.raises(MaintenanceStopped) as stop:
        maintain_nodes(session(runner, tmp_path, provider), Selection(role=Role.WORKER), reboot=True)
    message = str(stop.value)
    assert "stopped at worker-2: it did not come back after its reboot" in message
    assert "worker-2 is left drained" in message and "Done: worker-1. Not touched: worker-3" in message
    assert "fab activate-node --node worker-2" in message and "--nodes worker-3" in message
    assert provider.rebooted == ["worker-1", "worker-2"]
    assert drains(runner, "drain") == ["worker-1", "worker-2"] and drains(runner, "active") == ["worker-1"]
    assert runner.availability["worker-2"] == "drain" and runner.availability["worker-3"] == "active"


def test_a_failing_command_stops_the_run_with_its_output_tail(tmp_path: Path) -> None:
    runner, provider = swarm(), Rebooting()
    runner.answer(r"^apt-get -y upgrade$", "E: dpkg was interrupted", exit_code=100, node="worker-1")
    with pytest.raises(MaintenanceStopped, match=r"stopped at worker-1: the command failed(.|\n)*dpkg was interrupted"):
        maintain_nodes(session(runner, tmp_path, provider), Selection(role=Role.WORKER), command="apt-get -y upgrade")
    assert provider.rebooted == [] and drains(runner, "drain") == ["worker-1"] and not drains(runner, "active")


def test_the_dry_run_prints_the_order_and_the_checks_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner, provider = swarm(stale=("worker-2",)), Rebooting()
    dry = session(runner, tmp_path, provider, dry_run=True)
    maintain_nodes(dry, Selection(), command="apt-get -y upgrade", reboot=True)
    out = capsys.readouterr().out
    assert "order: worker-1, worker-2, worker-3, manager-1, manager-2, manager-3" in out
    assert "2. worker-2 (worker): drain -> daemon.json -> command -> reboot -> back -> activate -> converge" in out
    assert "check: every other manager is Ready and reachable" in out and "check: manager-3 is drained" in out
    assert "then: rebalance" in out
    assert not runner.commands(CHANGING) and not runner.files and provider.rebooted == []
    assert dry.timings.would_change and not dry.timings.changed


def test_the_lb_node_is_rebooted_last_and_its_haproxy_started_again_when_nothing_started_it(tmp_path: Path) -> None:
    runner, provider = swarm(), Rebooting()
    runner.answer(r"^printf 'config_sha=", "config_sha=abc\nsystemd=no\nrunning=no\n", node="lb-1")
    runner.answer(r"boot_id", "b5c1d2e3", node="lb-1")
    runner.answer(r"curl -sf -o /dev/null http://127.0.0.1:8404/stats", "ready", node="lb-1")
    maintain_nodes(session(runner, tmp_path, provider), Selection(("lb-1", "worker-1")), reboot=True)
    assert provider.rebooted == ["worker-1", "lb-1"]
    started = [c for c in runner.calls if c.node == "lb-1" and c.command.startswith("mkdir -p /run/haproxy && haproxy")]
    assert len(started) == 1 and drains(runner, "drain") == ["worker-1"]


def test_a_stale_daemon_json_is_written_then_applied_by_a_reboot(tmp_path: Path) -> None:
    runner, provider = swarm(stale=("worker-3",)), Rebooting()
    maintain_nodes(session(runner, tmp_path, provider), Selection(role=Role.WORKER), command="true")
    node = runner.inventory.node("worker-3")
    assert runner.files == {("worker-3", "/etc/docker/daemon.json.new"): rendered_daemon_json(node).encode()}
    assert "mv /etc/docker/daemon.json.new /etc/docker/daemon.json" in runner.commands(r"^mv ")
    assert provider.rebooted == ["worker-3"]


# --- the providers' reboot ---------------------------------------------------------------------------------


@dataclass
class Booting(FakeRunner):
    """A machine whose boot id changes once it is told to reboot (or never, with `stuck`)."""

    stuck: bool = False

    def run(
        self,
        node: Node,
        command: str,
        *,
        check: bool = True,
        stdin: str | IO[str] | None = None,
        timeout: float | None = None,
        secrets: Sequence[str] = (),
        hint: str = "",
    ) -> Result:
        if "systemctl reboot" in command and not self.stuck:
            self.answer(r"boot_id", "new-boot")
        return super().run(node, command, check=check, stdin=stdin, timeout=timeout, secrets=secrets, hint=hint)


def test_a_reboot_over_ssh_waits_for_another_boot_id_and_forgets_the_connection(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = Booting(inventory())
    runner.answer(r"boot_id", "old-boot")
    node = runner.inventory.node("worker-1")
    StaticProvider().reboot_node(parse_config({}), node, Executor(runner), PhaseResult("reboot"))
    assert runner.forgotten == ["worker-1"]
    assert [c.command.split()[0] for c in runner.calls] == ["echo", "nohup", "echo"]
    assert "systemctl reboot || shutdown -r now" in runner.calls[1].command
    # A machine that has not gone down yet is not taken for one that came back.
    monkeypatch.setattr(maintenance, "BACK_TIMEOUT", 0.3)
    monkeypatch.setattr(maintenance, "BACK_INTERVAL", 0.05)
    stuck = Booting(inventory(), stuck=True)
    stuck.answer(r"boot_id", "old-boot")
    with pytest.raises(SwarmlabError, match=r"worker-1 booted again: not reached(.|\n)*not rebooted yet"):
        StaticProvider().reboot_node(parse_config({}), node, Executor(stuck), PhaseResult("reboot"))


def test_every_provider_can_reboot_a_node() -> None:
    for name in PROVIDER_CLASSES:
        assert callable(getattr(provider_named(name), "reboot_node", None)), name


def test_the_lab_reboots_a_node_by_restarting_its_container_after_stopping_its_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cluster.lab import provider as lab

    events: list[str] = []

    class Container:
        def restart(self, timeout: int) -> None:
            events.append("restart")

    @dataclass
    class Recording(FakeRunner):
        def forget(self, node: Node) -> None:
            events.append(f"forget {node.name}")
            super().forget(node)

    runner = Recording(inventory())
    monkeypatch.setattr(lab, "client", lambda: None)
    monkeypatch.setattr(
        lab, "node_container", lambda engine, cluster, name: Container() if name == "worker-1" else None
    )
    progress = PhaseResult("reboot")
    lab.LabProvider().reboot_node(parse_config({}), runner.inventory.node("worker-1"), Executor(runner), progress)
    assert runner.commands(r"kill") and runner.calls[0].command.startswith("pid=$(cat /var/run/docker.pid")
    assert events == ["forget worker-1", "restart"] and progress.changes == [
        "the engine of worker-1 stopped",
        "restarted the container of worker-1",
    ]
    with pytest.raises(SwarmlabError, match="no lab container for worker-2"):
        lab.LabProvider().reboot_node(parse_config({}), runner.inventory.node("worker-2"), Executor(runner), progress)


def test_a_container_restarted_on_the_same_kernel_counts_as_booted_again() -> None:
    # The rehearsal's nodes share this machine's kernel: its boot id stays, PID 1's start time moves.
    before = BOOT_ID.parse(json.loads((Path(__file__).parent / "facts" / "boot_id.json").read_text())["output"])
    kernel, started = before.split()
    verdict = maintenance.booted_verdict(before)
    assert verdict(f"{kernel} {int(started) + 4200}\n").done
    assert not verdict(f"{before}\n").done
    assert verdict(f"another-kernel-boot {started}\n").done  # a VM's reboot
    assert not verdict("").done


# --- two lbs: the VIP handed over before each lb is touched --------------------------------------------------


@dataclass
class Pair(Swarm):
    """Two lbs and keepalived's VIP (.4): the holder answers `ip addr show to` the VIP; stopping keepalived
    on it moves the VIP to the other lb, whose keepalived must be running (a reboot stops an lb's, and
    starting it again makes it the backup: nopreempt). HAProxy answers on both unless told otherwise."""

    holder: str = "lb-1"
    keepalived: dict[str, bool] = field(default_factory=lambda: {"lb-1": True, "lb-2": True})
    haproxy_down: set[str] = field(default_factory=set)
    forgot_at: list[tuple[str, int]] = field(default_factory=list)  # each forget: the node, the commands run before

    def react(self, node: Node, command: str) -> None:
        if node.role == Role.LB:
            other = next(lb.name for lb in self.inventory.lbs if lb.name != node.name)
            if "keepalived.pid" in command and "nohup" in command:
                self.keepalived[node.name] = False
                if self.holder == node.name and self.keepalived[other]:
                    self.holder = other
            elif command.startswith("keepalived -f"):
                self.keepalived[node.name] = True
            held = "2: eth0    inet 10.20.0.4/24 scope global eth0" if self.holder == node.name else ""
            self.answer(r"^ip -o -4 addr show to 10.20.0.4$", held, node=node.name)
            running = "yes" if self.keepalived[node.name] else "no"
            self.answer(r"keepalived\.conf", f"config_sha=abc\nsystemd=no\nrunning={running}\n", node=node.name)
            self.answer(r"haproxy\.cfg", "config_sha=abc\nsystemd=no\nrunning=yes\n", node=node.name)
            down = node.name in self.haproxy_down
            self.answer(
                r"curl -sf -o /dev/null http://127\.0\.0\.1:8404/stats",
                "no" if down else "ready",
                int(down),
                node=node.name,
            )
            self.answer(
                r"^\(kill -0 \$\(head -n1 /run/keepalived\.pid\)\)",
                "ready" if self.keepalived[node.name] else "no",
                node=node.name,
            )
        super().react(node, command)

    def forget(self, node: Node) -> None:
        self.forgot_at.append((node.name, len(self.calls)))
        if node.role == Role.LB and node.name != self.holder:
            self.keepalived[node.name] = False  # the provider's reboot forgets the node: its keepalived died
        super().forget(node)


def pair() -> Pair:
    runner = Pair(two_lbs_inventory())
    base = swarm()
    runner.availability, runner.answers = base.availability, base.answers
    for lb in ("lb-1", "lb-2"):
        runner.answer(r"boot_id", "b5c1d2e3", node=lb)
    return runner


def test_each_lb_of_a_pair_hands_the_vip_over_before_it_is_touched() -> None:
    lbs = two_lbs_inventory().lbs
    rebooted = plan_maintenance(lbs, "", True, {}, lb_pair=True)
    assert [v.steps for v in rebooted.visits] == [(Step.HAND_OVER, Step.REBOOT, Step.BACK)] * 2
    commanded = plan_maintenance(lbs, "apt-get -y upgrade", False, {}, lb_pair=True)
    assert [v.steps for v in commanded.visits] == [(Step.HAND_OVER, Step.COMMAND, Step.BACK)] * 2
    assert any("hands the VIP over" in n for n in rebooted.notes)
    assert not any("does not answer while it reboots" in n for n in rebooted.notes)
    alone = plan_maintenance(lbs[:1], "", True, {})
    assert alone.visits[0].steps == (Step.REBOOT, Step.BACK)
    assert any("does not answer while it reboots" in n for n in alone.notes)
    assert "the other lb's HAProxy answers" in describe_maintenance(rebooted)


def test_rebooting_both_lbs_moves_the_vip_off_each_before_its_reboot(tmp_path: Path) -> None:
    runner, provider = pair(), Rebooting()
    maintain_nodes(session(runner, tmp_path, provider), Selection(role=Role.LB), reboot=True)
    assert provider.rebooted == ["lb-1", "lb-2"]
    stops = [i for i, c in enumerate(runner.calls) if "nohup" in c.command and "keepalived.pid" in c.command]
    assert [runner.calls[i].node for i in stops] == ["lb-1", "lb-2"]
    # Each lb was rebooted after its keepalived was stopped and the other held the VIP (the fake moves it then).
    assert stops[0] < provider.calls_before[0] <= stops[1] < provider.calls_before[1]
    started = [c.node for c in runner.calls if c.command.startswith("keepalived -f")]
    assert started == ["lb-1", "lb-2"]  # each again, as the backup
    assert runner.holder == "lb-1" and all(runner.keepalived.values())
    # The jump host's connection ran through the VIP: dropped as soon as the VIP left, before the waits after.
    assert any(n == "lb-1" and stops[0] < at < provider.calls_before[0] for n, at in runner.forgot_at)


def test_an_lb_is_not_touched_while_the_other_could_not_take_the_vip(tmp_path: Path) -> None:
    runner, provider = pair(), Rebooting()
    runner.haproxy_down.add("lb-2")
    with pytest.raises(SwarmlabError) as refused:
        maintain_nodes(session(runner, tmp_path, provider), Selection(("lb-1",)), reboot=True)
    assert "lb-2, the other lb, cannot hold the VIP: HAProxy does not answer there" in str(refused.value)
    assert provider.rebooted == [] and runner.holder == "lb-1" and all(runner.keepalived.values())
    assert not runner.commands(r"nohup")
