"""Two lbs in the lab (issue 19, item 1): keepalived holds the VIP on one lb, the VIP forwarder
publishes the lab's ports in place of a floating IP, and both lbs are SSH jump hosts.

A lab of its own (cluster `citest2`, lb_count 2, its own network and ports), made once for this module
(lab-up, bootstrap, deploy-stack of the small hello stack: its one page is all these tests ask for) and
torn down after it unless SWARMLAB_KEEP_LAB=1. It costs a lab-up of its own (a node image of its own the
first time: keepalived in it). `make lab-test` runs it with the others; `make lab-test-two-lbs` (marker
`two_lbs`) runs it alone. On a lab of two lbs of your own: export its SWARMLAB_* variables,
SWARMLAB_LB_COUNT=2 among them, and LAB_TESTS_ON_OWN_LAB=1 (a lab of your own of one lb is the other
modules' business: these tests then make citest2 as in CI).

Each test leaves both lbs serving and one of them holding the VIP. Traffic goes to the lab's
127.0.0.1 ports only; every wait and every load is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import docker
import httpx
import pytest
from docker.models.containers import Container

from cluster.config import load_config
from cluster.errors import CommandFailed, SwarmlabError
from cluster.facts import read
from cluster.facts.network import interface_with
from cluster.inventory import Node
from cluster.lab.layout import container_name, forwarder_name, lab_nodes
from cluster.lab.provider import LabProvider
from cluster.runners import SshRunner
from tests.lab.conftest import CITEST_ENV, ROOT, Lab, fab

pytestmark = [pytest.mark.lab, pytest.mark.two_lbs, pytest.mark.timeout(900, func_only=True)]

# Beside the CI lab (citest), the rehearsal, bench and chaos labs: a name, network, overlay pool and ports of its own.
OWN_LAB = os.environ.get("LAB_TESTS_ON_OWN_LAB") == "1" and os.environ.get("SWARMLAB_LB_COUNT") == "2"
TWO_LBS_ENV = {
    **(
        {key: os.environ.get(key, value) for key, value in CITEST_ENV.items()}
        if OWN_LAB
        else {
            "SWARMLAB_CLUSTER": "citest2",
            "SWARMLAB_CIDR": "10.36.0.0/24",
            "SWARMLAB_OVERLAY_POOL": "10.136.0.0/16",
            "SWARMLAB_HTTP_PORT": "26080",
            "SWARMLAB_HTTPS_PORT": "26443",
            "SWARMLAB_SSH_PORT": "26222",
            "SWARMLAB_STATS_PORT": "26404",
        }
    ),
    "SWARMLAB_LB_COUNT": "2",
}
STACK = "hello"
PATH = "/hello/"
VIP_MOVE_TIMEOUT = 30  # keepalived's takeover is about 3 adverts of 1 s; the check's FALL 2 s more
ANSWER_TIMEOUT = 60  # an lb brought back serves again (sshd, then HAProxy started by the task)
CLIENT_TIMEOUT = 15  # a request through the published port: the forwarder retries a connection ~9 s
# The load during a kill: WORKERS requests in flight at once, each on a new connection (a kept-alive
# connection to the dead lb would fail a request that was not in flight yet).
WORKERS = 4
# Bounds, not targets: the lab answers about 200 GETs a second, so the count must outlast the time bound
# (a first run stopped at 3,000 requests, 15 s in, before the VIP had moved and 200 answers could follow).
LOAD_MAX_REQUESTS = 40_000
LOAD_MAX_SECONDS = 180
AFTER_MOVE = 200  # good answers once the VIP has moved, before the load stops


def two_lbs(*args: str, check: bool = True, timeout: float = 1500) -> str:
    done = fab(*args, env=TWO_LBS_ENV, check=check, timeout=timeout)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def pair() -> Iterator[Lab]:
    config = load_config(ROOT / "swarmlab.yaml", {**os.environ, **TWO_LBS_ENV})
    assert config.lb_count == 2 and config.cluster == TWO_LBS_ENV["SWARMLAB_CLUSTER"]
    try:
        two_lbs("lab-up")
        two_lbs("bootstrap")
        two_lbs("deploy-stack", "--stack", STACK)
        inventory = LabProvider().inventory(config, "lab")
        nodes = SshRunner(inventory)
        try:
            yield Lab(config, inventory, nodes)
        finally:
            nodes.close()
    finally:
        if os.environ.get("SWARMLAB_KEEP_LAB") != "1":
            two_lbs("lab-down")
            engine = docker.from_env()
            selector: dict[str, str | list[str] | bool] = {"label": f"swarmlab.cluster={config.cluster}"}
            left = [c.name for c in engine.containers.list(all=True, filters=selector)]
            left += [n.name for n in engine.networks.list(filters=selector)]
            assert left == [], f"lab-down left {left} (the VIP forwarder too?)"


# --- helpers ---------------------------------------------------------------------------------------


def holders(lab: Lab) -> dict[str, bool | None]:
    """Each lb: whether it holds the VIP (None: it does not answer over SSH). A runner of its own each
    time: a connection through an lb that died is not reused."""
    vip = str(lab.inventory.network.vip)
    found: dict[str, bool | None] = {}
    runner = SshRunner(lab.inventory)
    try:
        for lb in lab.inventory.lbs:
            try:
                found[lb.name] = bool(read(runner, lb, interface_with(vip), timeout=10))
            except (CommandFailed, SwarmlabError):
                found[lb.name] = None
    finally:
        runner.close()
    return found


def wait_for(what: str, done: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(interval)


def the_holder(lab: Lab) -> str:
    """The one lb that holds the VIP, once exactly one does."""
    found: dict[str, bool | None] = {}

    def one() -> bool:
        found.clear()
        found.update(holders(lab))
        return sum(1 for held in found.values() if held) == 1

    wait_for(f"exactly one lb holds the VIP ({found})", one, VIP_MOVE_TIMEOUT)
    return next(name for name, held in found.items() if held)


def other(lab: Lab, name: str) -> Node:
    return next(lb for lb in lab.inventory.lbs if lb.name != name)


def client(lab: Lab) -> httpx.Client:
    """Through the published HTTPS port (the forwarder), verified against the lab's CA; a new connection
    for every request."""
    return httpx.Client(verify=lab.tls, timeout=CLIENT_TIMEOUT, limits=httpx.Limits(max_keepalive_connections=0))


def answers(lab: Lab) -> bool:
    with client(lab) as http, contextlib.suppress(httpx.HTTPError):
        return http.get(lab.url + PATH).status_code == 200
    return False


def container(lab: Lab, node: str) -> Container:
    planned = next(n for n in lab_nodes(lab.config) if n.name == node)
    return docker.from_env().containers.get(container_name(lab.config, planned))


def bring_back(lab: Lab, name: str) -> None:
    """A killed lb's container started again (node-init starts its keepalived), its HAProxy started by
    `fab haproxy`; then both lbs serve and exactly one holds the VIP."""
    killed = container(lab, name)
    killed.reload()
    if killed.status != "running":
        killed.start()
    wait_for(f"{name} answers over SSH", lambda: holders(lab)[name] is not None, ANSWER_TIMEOUT, 1)
    two_lbs("haproxy")
    out = two_lbs("keepalived")
    # node-init started keepalived from the file the task had pushed: the task finds it current and running.
    assert f"{name}: /etc/keepalived/keepalived.conf is current and keepalived runs" in out, out
    the_holder(lab)
    wait_for("the published port answers", lambda: answers(lab), ANSWER_TIMEOUT)


def forwarder_trouble(lab: Lab, since: float) -> list[str]:
    """The forwarder's log lines (option tcplog) since `since` (epoch seconds) for connections it did not
    end cleanly (termination state other than `--`): how it ended a lost request, and after how many
    connect retries and bytes."""
    logs = docker.from_env().containers.get(forwarder_name(lab.config)).logs(since=int(since)).decode(errors="replace")
    return [line for line in logs.splitlines() if " -- " not in line][-15:]


def stopped(killed: Container) -> bool:
    killed.reload()
    return bool(killed.status != "running")


@dataclass
class Load:
    """GETs through the published port from WORKERS threads until stopped, or LOAD_MAX_REQUESTS, or
    LOAD_MAX_SECONDS: each request's outcome with the times it was sent and ended."""

    lab: Lab
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[tuple[float, float, str]] = field(default_factory=list)  # (sent, ended, "ok" or what failed)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """WORKERS threads of it, once they get answers."""
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(WORKERS)]
        for thread in self.threads:
            thread.start()
        try:
            wait_for("the load gets answers", lambda: self.good_since(0) >= 50, 60)
        except AssertionError:
            self.stop.set()
            raise

    def finish(self, origin: float, event: str = "the kill") -> None:
        """Stopped, its threads ended; what it saw printed (pytest shows it with a failure)."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)
        print(self.summary(origin, event))

    def run(self) -> None:
        deadline = time.monotonic() + LOAD_MAX_SECONDS
        with client(self.lab) as http:
            while not self.stop.is_set() and time.monotonic() < deadline:
                with self.lock:
                    if len(self.outcomes) >= LOAD_MAX_REQUESTS:
                        return
                sent = time.monotonic()
                try:
                    status = http.get(self.lab.url + PATH).status_code
                    outcome = "ok" if status == 200 else f"HTTP {status}"
                except httpx.HTTPError as error:
                    outcome = f"{type(error).__name__}: {error}"
                with self.lock:
                    self.outcomes.append((sent, time.monotonic(), outcome))

    def good_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for sent, _, outcome in self.outcomes if sent >= moment and outcome == "ok")

    def summary(self, origin: float, event: str = "the kill") -> str:
        """What the load saw, for the test's output and its failures: counts, and the failures' times
        from the event."""
        failed = [
            (round(sent - origin, 2), round(ended - origin, 2), outcome) for sent, ended, outcome in self.failures()
        ]
        return (
            f"{len(self.outcomes)} requests, {len(failed)} failed (sent and ended, seconds from {event}): {failed[:10]}"
        )

    def failures(self) -> list[tuple[float, float, str]]:
        with self.lock:
            return [(sent, ended, outcome) for sent, ended, outcome in self.outcomes if outcome != "ok"]


# --- the tests --------------------------------------------------------------------------------------


def test_the_vip_answers_through_the_published_ports(pair: Lab) -> None:
    lab = pair
    assert [lb.name for lb in lab.inventory.lbs] == ["lb-1", "lb-2"] and lab.inventory.network.vip is not None
    holder = the_holder(lab)
    with client(lab) as http:
        page = http.get(lab.url + PATH)
        assert page.status_code == 200 and "Hello from" in page.text
        stats = http.get(str(lab.inventory.endpoints.stats))
        assert stats.status_code == 200
        plain = http.get(f"http://{lab.config.bind_address}:{lab.config.http_port}{PATH}")
        assert plain.status_code == 301 and plain.headers["location"].startswith("https://")
    # The forwarder publishes the ports, no lb does.
    engine = docker.from_env()
    assert engine.containers.get(forwarder_name(lab.config)).ports
    assert not any(container(lab, lb.name).ports for lb in lab.inventory.lbs)
    report = two_lbs("status")
    assert f"the virtual IP {lab.inventory.network.vip} is on {holder}" in report, report


def test_stopping_the_holders_haproxy_moves_the_vip(pair: Lab) -> None:
    lab = pair
    holder = the_holder(lab)
    stays = other(lab, holder)
    runner = SshRunner(lab.inventory)  # a runner of its own: the module's may go through an lb a test killed
    try:
        runner.run(lab.inventory.node(holder), 'kill "$(head -n1 /run/haproxy.pid)"')
    finally:
        runner.close()
    try:
        wait_for(
            f"the VIP moves from {holder} to {stays.name}",
            lambda: holders(lab) == {holder: False, stays.name: True},
            VIP_MOVE_TIMEOUT,
        )
        wait_for("the published port answers from the new holder", lambda: answers(lab), VIP_MOVE_TIMEOUT)
    finally:
        two_lbs("haproxy")  # starts the stopped HAProxy again
    # nopreempt: the VIP stays where it went, and the lb it left serves again as the backup.
    assert the_holder(lab) == stays.name


def test_killing_the_holder_moves_the_vip_and_loses_at_most_the_requests_in_flight(pair: Lab) -> None:
    lab = pair
    holder = the_holder(lab)
    stays = other(lab, holder)
    load = Load(lab)
    load.start()
    killed_at = dead_at = 0.0
    killed_wall = time.time()
    try:
        killed_at = time.monotonic()
        killed = container(lab, holder)
        killed.kill()
        wait_for(f"{holder} has died", lambda: stopped(killed), VIP_MOVE_TIMEOUT, 0.05)
        dead_at = time.monotonic()
        wait_for(f"the VIP moves to {stays.name}", lambda: holders(lab)[stays.name] is True, VIP_MOVE_TIMEOUT)
        moved_at = time.monotonic()
        wait_for(f"{AFTER_MOVE} answers after the move", lambda: load.good_since(moved_at) >= AFTER_MOVE, 120)
    finally:
        load.finish(killed_at)
    try:
        failures = load.failures()
        # A request sent just before the kill call is in flight when the lb dies (the CI of fdc9c26: 3 cut,
        # sent 0.01-0.02 s before it); one that failed and ended before the call failed for another reason.
        assert not [f for f in failures if f[1] < killed_at], "a request failed before the kill"
        # In flight: sent before the lb had died. Its death takes a moment after `docker kill` (CI37, a busy
        # machine: 5 lost, sent up to 0.29 s after the call; a worker whose request was cut sent the next into
        # the dying lb). Every request sent once it was dead is answered: the forwarder retries the
        # connection until the VIP has moved.
        after_death = [(round(sent - killed_at, 2), outcome) for sent, _, outcome in failures if sent >= dead_at]
        assert not after_death, (
            f"{holder} had died {dead_at - killed_at:.2f} s after the kill; {len(after_death)} requests sent after "
            f"that failed (seconds from the kill, outcome): {after_death[:10]}; the forwarder's unclean "
            f"connections since: {forwarder_trouble(lab, killed_wall - 1)}"
        )
    finally:
        bring_back(lab, holder)
    assert the_holder(lab) == stays.name  # nopreempt: the lb brought back did not take the VIP back


def test_the_other_lb_serves_ssh_for_the_tasks(pair: Lab) -> None:
    """With lb-1 (the inventory's jump host) dead, the tasks go through lb-2: the runner falls back to it
    at the published SSH port, where the forwarder reaches whichever lb is there."""
    lab = pair
    container(lab, "lb-1").kill()
    try:
        wait_for("lb-2 holds the VIP", lambda: holders(lab)["lb-2"] is True, VIP_MOVE_TIMEOUT)
        runner = SshRunner(lab.inventory)
        try:
            worker = lab.inventory.workers[0]
            assert runner.run(worker, "hostname").stdout.strip() == worker.name
            assert runner._gateway_node == "lb-2"
        finally:
            runner.close()
        report = two_lbs("status")
        assert f"the virtual IP {lab.inventory.network.vip} is on lb-2" in report, report
    finally:
        bring_back(lab, "lb-1")


def test_maintain_nodes_reboots_both_lbs_handing_the_vip_over_and_the_site_keeps_answering(pair: Lab) -> None:
    """`fab maintain-nodes --role lb --reboot`: each lb gives the VIP to the other before its reboot, so
    the published port keeps answering. A move cuts at most the requests in flight through the lb it
    leaves: one per load thread, two moves. (Rebooting an lb that holds the VIP, as the run did before
    the hand-over, costs every request for as long as the VIP takes to move and more: keepalived first
    has to notice that its peer stopped advertising.)"""
    lab = pair
    first = the_holder(lab)
    load = Load(lab)
    load.start()
    began = time.monotonic()
    try:
        out = two_lbs("maintain-nodes", "--role", "lb", "--reboot")
        ended = time.monotonic()
        wait_for(f"{AFTER_MOVE} answers after the run", lambda: load.good_since(ended) >= AFTER_MOVE, 120)
    finally:
        load.finish(began, "the run's start")
    for lb in lab.inventory.lbs:
        assert f"keepalived stopping on {lb.name}: it gives the VIP up" in out, out
        assert f"{other(lab, lb.name).name} holds the VIP" in out, out
    assert None not in holders(lab).values()  # both answer over SSH (None: an lb that did not come back)
    # lb-2 went last and gave the VIP to lb-1, wherever it was before (nopreempt: nothing moved it back).
    assert the_holder(lab) == "lb-1", f"{first} held the VIP before the run"
    failures = [f for f in load.failures() if f[0] >= began]
    assert len(failures) <= 2 * WORKERS, load.summary(began, "the run's start")
    assert answers(lab)
