"""`make chaos`: day-2 operations and failures under steady load, each scenario on a lab of its own.

Load (bounded in count and time, aimed only at the lab's 127.0.0.1 ports):
- plain `GET /` from Debian's `hey` (a fixed rate, one CSV row per request);
- the full registration flow (eligible list, OTP request, the mail read from the lab's mail sink,
  authentication, registration) from a small driver on httpx, each step recorded.
Per scenario: requests sent, failed (by status or error), p50/p99 latency, and the time from the
event until every service has its replicas again. Writes docs/bench/chaos.json, one plot per
scenario (status classes per second, the event marked) and the chaos table of docs/numbers.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.apiload import Credentials, Record, Recorder, Target, flow
from bench.common import FAB, NUMBERS_PAGE, OUT, ROOT, replace_block, write_report
from cluster.config import load_config
from cluster.facts import read
from cluster.facts.network import interface_with
from cluster.facts.services import stack_services
from cluster.inventory import load_inventory
from cluster.reads import find_leader
from cluster.runners import SshRunner

ENV = {
    "SWARMLAB_CLUSTER": "chaos",
    "SWARMLAB_CIDR": "10.38.0.0/24",
    "SWARMLAB_OVERLAY_POOL": "10.138.0.0/16",
    "SWARMLAB_HTTP_PORT": "39080",
    "SWARMLAB_SSH_PORT": "39222",
    "SWARMLAB_STATS_PORT": "39404",
    "SWARMLAB_HTTPS_PORT": "39443",
}
URL = f"https://127.0.0.1:{ENV['SWARMLAB_HTTPS_PORT']}"
STACK = "registration"
GET_RATE = 20  # requests per second per hey connection
GET_CONNECTIONS = 4
FLOW_THREADS = 3
# Flows per thread at most: far more than a scenario's time allows, so the flows go on until the load
# stops (500 ran out before a rolling update of api was over).
MAX_FLOWS = 5000
WARMUP = 8.0
MAX_EVENT_SECONDS = 240.0
AFTER_RECOVERY = 10.0


def fab(*args: str, check: bool = True, timeout: float = 900, lb_count: int = 1) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, "SWARMLAB_LB_COUNT": str(lb_count)}
    done = subprocess.run([FAB, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"fab {' '.join(args)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-1000:]}"
        )
    return done


@dataclass
class Lab:
    """The chaos lab: its nodes over SSH (for facts) and its containers (for failures)."""

    nodes: SshRunner
    credentials: dict[str, str]
    ca: Path  # the lab's CA: the driver verifies HAProxy's certificate against it
    lb_count: int = 1
    engine: docker.DockerClient = field(default_factory=docker.from_env)
    killed: str = ""  # a worker killed by the scenario: recovery counts from Swarm marking it down
    down_at: float = 0.0  # when Swarm had marked it down (monotonic), once the operator saw it
    killed_ran: tuple[str, ...] = ()  # the services whose tasks ran on it when it was killed

    def container(self, node: str) -> Any:
        return self.engine.containers.get(f"swarmlab-{ENV['SWARMLAB_CLUSTER']}-{node}")

    def node_running(self, service: str) -> str:
        leader = find_leader(self.nodes)
        out = self.nodes.run(
            leader, f"docker service ps {STACK}_{service} --filter desired-state=running --format '{{{{.Node}}}}'"
        ).stdout.split()
        return out[0]

    def marked_down(self, node: str) -> bool:
        try:
            leader = find_leader(self.nodes)
        except Exception:  # no manager answers: nothing is marked yet
            return False
        listed = self.nodes.run(leader, "docker node ls --format '{{.Hostname}} {{.Status}}'", check=False).stdout
        return f"{node} Down" in listed.splitlines()

    def converged(self) -> bool:
        try:
            leader = find_leader(self.nodes)
        except Exception:  # no manager answers (quorum lost): not converged
            return False
        states = read(self.nodes, leader, stack_services(STACK), check=False)
        return bool(states) and all(s.settled for s in states)


class FlowDriver:
    """Full registration flows (bench/apiload.py's), one after the other on each thread, every step recorded."""

    def __init__(self, started: float, credentials: dict[str, str], ca: Path, stop: threading.Event) -> None:
        self.tls = ssl.create_default_context(cafile=str(ca))
        self.stop = stop
        self.recorder = Recorder(started)
        self.records = self.recorder.records
        api = ("api", credentials["api_password"])
        admin = ("admin", credentials["admin_password"]) if "admin_password" in credentials else api
        self.credentials = Credentials(api, admin)
        self.target = Target(api=URL + "/api", mail=URL + "/mail")
        self.flows_done = 0
        self.lock = threading.Lock()

    def run(self, max_flows: int) -> None:
        # Above HAProxy's timeout server (75 s): a request held while the broker moves is not cut here.
        with httpx.Client(timeout=90, verify=self.tls) as client:
            for _ in range(max_flows):
                if self.stop.is_set():
                    return
                email = f"chaos-{uuid.uuid4().hex[:12]}@example.org"
                if flow(self.recorder, client, self.target, email, self.credentials, stop=self.stop):
                    with self.lock:
                        self.flows_done += 1


def hey_records(path: Path, offset: float) -> list[Record]:
    """hey's CSV: response-time (s), ..., status-code (0 when no answer), offset (s since hey started)."""
    records = []
    for row in csv.DictReader(io.StringIO(path.read_text())):
        try:
            records.append(
                Record(
                    float(row["offset"]) + offset, "get", int(row["status-code"]), float(row["response-time"]) * 1000
                )
            )
        except (KeyError, ValueError):
            continue
    return records


@dataclass
class Scenario:
    name: str
    description: str
    event: Callable[[Lab], None]  # what happens (returns when the operation returns)
    recover: Callable[[Lab], None] | None = None  # what an operator does afterwards, still under load
    # How long the event itself may take: the load runs for warm-up + this + the wait for recovery.
    event_seconds: float = 0.0
    lb_count: int = 1  # 2: the lab has two lbs and keepalived's VIP (issue 19)


def _kill(lab: Lab, node: str) -> None:
    lab.killed = node
    tasks = lab.nodes.run(
        find_leader(lab.nodes), f"docker node ps {node} --filter desired-state=running --format '{{{{.Name}}}}'"
    ).stdout.split()
    # Task names are <stack>_<service>.<slot>: what died with the node (the mail sink's memory included).
    lab.killed_ran = tuple(sorted({name.split(".")[0].removeprefix(f"{STACK}_") for name in tasks}))
    lab.container(node).kill()


def _start_the_killed_node(lab: Lab) -> None:
    """What an operator does about a dead machine: once Swarm has marked it down, start it again
    (`fab lab-up` starts a lab's stopped nodes). Until then a service with one replica per worker
    cannot have all its replicas, so the stack cannot converge without it."""
    deadline = time.monotonic() + MAX_EVENT_SECONDS
    while not lab.marked_down(lab.killed):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Swarm did not mark {lab.killed} down within {MAX_EVENT_SECONDS:.0f} s")
        time.sleep(1)
    lab.down_at = time.monotonic()
    fab("lab-up", lb_count=lab.lb_count)


def _kill_vip_holder(lab: Lab) -> None:
    """The lb that holds the VIP, killed. The lab's runner may have gone through it: a new one, which
    falls back to the other lb (cluster/runners.py)."""
    vip = str(lab.nodes.inventory.network.vip)
    holder = next(lb for lb in lab.nodes.inventory.lbs if read(lab.nodes, lb, interface_with(vip), timeout=10))
    lab.container(holder.name).kill()
    lab.nodes.close()
    lab.nodes = SshRunner(lab.nodes.inventory)


def _stop(lab: Lab, *names: str) -> None:
    for name in names:
        lab.container(name).stop(timeout=0)


def _fab(*steps: tuple[str, ...]) -> Callable[[Lab], None]:
    """An event that runs fab tasks one after the other."""

    def event(lab: Lab) -> None:
        for step in steps:
            fab(*step, lb_count=lab.lb_count)

    return event


def _drain_stateful(lab: Lab) -> None:
    node = lab.node_running("postgres")
    for step in (("drain-node", node), ("activate-node", node), ("rebalance",)):
        fab(*step, lb_count=lab.lb_count)


SCENARIOS = (
    Scenario("update-ui", "rolling update of ui (fab update ui --force)", _fab(("update", "ui", "--force"))),
    Scenario("update-api", "rolling update of api (fab update api --force)", _fab(("update", "api", "--force"))),
    Scenario(
        "rollback-api", "update api, then fab rollback api", _fab(("update", "api", "--force"), ("rollback", "api"))
    ),
    Scenario("scale-api", "scale api 3 -> 1 -> 3", _fab(("scale", "api=1"), ("scale", "api=3"))),
    Scenario(
        "drain-stateful-worker",
        "drain the worker running PostgreSQL (and what shares it), activate it, rebalance",
        _drain_stateful,
    ),
    Scenario(
        "kill-worker",
        "hard kill of a worker running api (docker kill), started again once marked down",
        lambda lab: _kill(lab, lab.node_running("api")),
        recover=_start_the_killed_node,
    ),
    Scenario(
        "kill-database-worker",
        "hard kill of the worker running PostgreSQL (docker kill), started again once marked down",
        lambda lab: _kill(lab, lab.node_running("postgres")),
        recover=_start_the_killed_node,
    ),
    Scenario(
        "kill-broker-worker",
        "hard kill of the worker running RabbitMQ (docker kill), started again once marked down",
        lambda lab: _kill(lab, lab.node_running("rabbitmq")),
        recover=_start_the_killed_node,
    ),
    Scenario(
        "kill-vip-holder",
        "two lbs: hard kill of the lb holding the VIP (docker kill)",
        _kill_vip_holder,
        lb_count=2,
    ),
    Scenario(
        "lose-one-manager", "the leader's container stopped (1 of 3 managers)", lambda lab: _stop(lab, "manager-1")
    ),
    Scenario(
        "lose-two-managers",
        "2 of 3 managers stopped (quorum lost), then fab recover",
        lambda lab: _stop(lab, "manager-2", "manager-3"),
        recover=_fab(("recover",)),
    ),
    Scenario(
        "reboot-workers",
        "every worker rebooted, one at a time (fab maintain-nodes --role worker --reboot)",
        _fab(("maintain-nodes", "--role", "worker", "--reboot")),
        event_seconds=600.0,
    ),
    Scenario(
        "reboot-managers",
        "every manager rebooted, one at a time, quorum checked (fab maintain-nodes --role manager --reboot)",
        _fab(("maintain-nodes", "--role", "manager", "--reboot")),
        event_seconds=600.0,
    ),
    Scenario(
        "restart-storage",
        "restart of the storage node (NFS server, registry)",
        lambda lab: lab.container("storage-1").restart(timeout=5),
    ),
)


def _summary(records: list[Record], kinds: Callable[[str], bool]) -> dict[str, Any]:
    chosen = [r for r in records if kinds(r.kind)]
    failed = [r for r in chosen if r.status == 0 or r.status >= 500 or r.status == 429]
    latencies = sorted(r.ms for r in chosen if r.status)
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "requests": len(chosen),
        "failed": len(failed),
        "failed_by": _count(f"{r.kind} {r.status or r.error}" for r in failed),
        "failed_at_s": [round(r.t, 1) for r in failed][:50],
        # Each failure: when it was sent, how long it took, and who said no (the API's code, HAProxy's page).
        "failures": [
            {"at_s": round(r.t, 1), "kind": r.kind, "status": r.status, "ms": round(r.ms), "said": r.answer or r.error}
            for r in failed
        ][:20],
        # Answered only when sent again with its Idempotency-Key after a cut connection (not failed).
        "sent_again": len([r for r in chosen if r.tries > 1 and r not in failed]),
        "sent_again_at_s": [round(r.t, 1) for r in chosen if r.tries > 1][:50],
        "p50_ms": round(q[49], 1),
        "p99_ms": round(q[98], 1),
    }


def _count(items: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in items:
        found[item] = found.get(item, 0) + 1
    return found


def _plot(name: str, records: list[Record], event: float, recovered: float | None) -> None:
    figure, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    panels: tuple[tuple[str, Callable[[str], bool]], ...] = (
        ("GET /", lambda k: k == "get"),
        ("registration flow", lambda k: k != "get"),
    )
    for axis, (label, pick) in zip(axes, panels, strict=True):
        chosen = [r for r in records if pick(r.kind)]
        end = int(max((r.t for r in chosen), default=0)) + 1
        classes: dict[str, Callable[[int], bool]] = {
            "2xx/3xx/4xx": lambda s: 0 < s < 500 and s != 429,
            "5xx/429": lambda s: s >= 500 or s == 429,
            "no answer": lambda s: s == 0,
        }
        for cls, test in classes.items():
            per_second = [0] * end
            for r in chosen:
                if test(r.status):
                    per_second[int(r.t)] += 1
            axis.plot(range(end), per_second, label=cls)
        axis.axvline(event, color="red", linestyle="--", label="event")
        if recovered is not None:
            axis.axvline(recovered, color="green", linestyle=":", label="recovered")
        axis.set_ylabel(f"{label}\nrequests/s")
        axis.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("seconds since the load started")
    axes[0].set_title(f"chaos: {name}")
    figure.tight_layout()
    figure.savefig(OUT / f"chaos-{name}.png", dpi=100)
    plt.close(figure)


def fresh_lab(lb_count: int) -> Lab:
    fab("lab-down")  # the image cache stays: each scenario's lab deploys from it
    for step in ("lab-up", "bootstrap", "deploy-stack"):
        fab(step, lb_count=lb_count)
    config = load_config(environ={**os.environ, **ENV, "SWARMLAB_LB_COUNT": str(lb_count)})
    state = config.state(provider="lab")
    inventory = load_inventory(state.inventory)
    return Lab(SshRunner(inventory), json.loads(state.credentials.read_text()), state.ca_cert, lb_count)


def run_scenario(scenario: Scenario, scratch: Path) -> dict[str, Any]:
    lab = fresh_lab(scenario.lb_count)
    duration = WARMUP + scenario.event_seconds + MAX_EVENT_SECONDS + AFTER_RECOVERY
    csv_path = scratch / f"hey-{scenario.name}.csv"
    started = time.monotonic()
    with csv_path.open("w") as out:
        hey = subprocess.Popen(
            [
                "hey",
                "-z",
                f"{int(duration)}s",
                "-c",
                str(GET_CONNECTIONS),
                "-q",
                str(GET_RATE),
                "-t",
                "10",
                "-o",
                "csv",
                URL + "/",
            ],
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()
        driver = FlowDriver(started, lab.credentials, lab.ca, stop)
        threads = [threading.Thread(target=driver.run, args=(MAX_FLOWS,), daemon=True) for _ in range(FLOW_THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(WARMUP)
        event = time.monotonic() - started
        error = ""
        recover_seconds = None
        try:
            scenario.event(lab)
            if scenario.recover is not None:
                time.sleep(5)  # the data plane runs on without a control plane meanwhile
                began = time.monotonic()
                scenario.recover(lab)
                recover_seconds = time.monotonic() - began
        except Exception as failure:  # recorded: a scenario whose operation fails is a finding
            error = str(failure)[-1500:]
        recovered = None
        marked_down = lab.down_at - started if lab.down_at else None
        deadline = time.monotonic() + MAX_EVENT_SECONDS
        while time.monotonic() < deadline:
            # A killed node's tasks count as running until Swarm marks it down (about 10 s later).
            if lab.killed and marked_down is None:
                if lab.marked_down(lab.killed):
                    marked_down = time.monotonic() - started
                else:
                    time.sleep(1)
                    continue
            if lab.converged():
                recovered = time.monotonic() - started
                break
            time.sleep(1)
        time.sleep(AFTER_RECOVERY)
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        hey.send_signal(signal.SIGINT)  # hey writes its CSV on SIGINT; SIGTERM would lose it all
        hey.wait(timeout=60)
    lab.nodes.close()
    records = hey_records(csv_path, 0.0) + driver.records
    _plot(scenario.name, records, event, recovered)
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "get": _summary(records, lambda k: k == "get"),
        "flow": _summary(records, lambda k: k != "get") | {"flows_completed": driver.flows_done},
        "event_at_s": round(event, 1),
        "recovered_after_s": round(recovered - event, 1) if recovered is not None else None,
        "marked_down_after_s": round(marked_down - event, 1) if marked_down is not None else None,
        # The operator's step (`fab recover`; for a killed node, the wait for Swarm to mark it down and the
        # `fab lab-up` that starts it), from its start to its end.
        "recover_s": round(recover_seconds, 1) if recover_seconds is not None else None,
        "operation_error": error,
    }
    if lab.killed:
        result["killed_node_ran"] = list(lab.killed_ran)
    print(
        f"{scenario.name:<24} GET {result['get']['failed']}/{result['get']['requests']} failed, "
        f"flow {result['flow']['failed']}/{result['flow']['requests']} failed, "
        f"p99 {result['flow']['p99_ms']} ms, recovered after {result['recovered_after_s']} s"
        + (f"; operation failed: {error[:200]}" if error else "")
    )
    return result


def chaos_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | GET / requests | failed | flow requests | failed | flow p50 / p99 | recovered after the event |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        recovered = f"{r['recovered_after_s']} s" if r["recovered_after_s"] is not None else "not within the bound"
        if r.get("marked_down_after_s") is not None:
            recovered += f" (marked down after {r['marked_down_after_s']} s)"
        if r.get("recover_s") is not None:
            recovered += f" (the operator's step {r['recover_s']} s)"
        if r.get("operation_error"):
            recovered += " (the operation failed: see chaos.json)"
        flow_failed = str(r["flow"]["failed"])
        if r["flow"].get("sent_again"):
            flow_failed += f" ({r['flow']['sent_again']} answered when sent again with their key)"
        lines.append(
            f"| {r['description']} | {r['get']['requests']} | {r['get']['failed']} | {r['flow']['requests']} | "
            f"{flow_failed} | {r['flow']['p50_ms']} / {r['flow']['p99_ms']} ms | {recovered} |"
        )
    return "\n".join(lines)


def update_numbers_page(results: list[dict[str, Any]]) -> None:
    replace_block(NUMBERS_PAGE, "<!-- chaos:start -->", "<!-- chaos:end -->", chaos_table(results))


def main(names: list[str]) -> None:
    """Every scenario, or the ones named: those replace their earlier results in chaos.json (each
    result keeps its own time), and the table of docs/numbers.md is made from the whole file."""
    chosen = [s for s in SCENARIOS if not names or s.name in names]
    unknown = sorted(set(names) - {s.name for s in SCENARIOS})
    if unknown:
        raise SystemExit(f"no scenario {', '.join(unknown)}; scenarios: {', '.join(s.name for s in SCENARIOS)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="swarmlab-chaos-") as scratch:
        try:
            for scenario in chosen:
                results.append(run_scenario(scenario, Path(scratch)) | {"measured_at": _now()})
        finally:
            # SWARMLAB_KEEP_LAB=1 (as for the lab tests) keeps the last scenario's lab, to read its logs.
            if not os.environ.get("SWARMLAB_KEEP_LAB"):
                fab("lab-down", check=False)
    report = OUT / "chaos.json"
    document = json.loads(report.read_text()) if names and report.exists() else {}
    stamp = document.get("measured_at")
    earlier = [r | {"measured_at": r.get("measured_at", stamp)} for r in document.get("scenarios", [])]
    fresh = {r["scenario"]: r for r in results}
    order = [s.name for s in SCENARIOS]
    merged = [fresh.get(r["scenario"], r) for r in earlier] + [
        r for r in results if r["scenario"] not in {e["scenario"] for e in earlier}
    ]
    merged.sort(key=lambda r: order.index(r["scenario"]) if r["scenario"] in order else len(order))
    write_report(
        "chaos",
        {
            "mode": "lab, storage mode shared-dir; load from 127.0.0.1: hey GET / "
            f"({GET_CONNECTIONS} connections x {GET_RATE} req/s) and {FLOW_THREADS} full registration flows at a time",
            "scenarios": merged,
        },
    )
    update_numbers_page(merged)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


if __name__ == "__main__":
    main(sys.argv[1:])
