"""Observability on the lab: `fab logs` and `fab events` through a manager, Docker configs that roll
exactly the services that mount them, Prometheus scraping every engine, service and HAProxy (and
counting registrations), `fab status` with rates and the cluster map, and bad input refused before
anything runs. Each test leaves the cluster as it found it (other test files share this lab)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cluster.inventory import Node
from tests.lab.conftest import ROOT, Lab, fab
from tests.lab.test_registration import eligible, fresh_email, mails, otp_from

pytestmark = pytest.mark.lab
STACK = "registration"
PYTHON_SERVICES = {"ui", "api", "otp", "student", "enroll", "email", "email_otp", "mailsink"}
PROMETHEUS_CONFIG = ROOT / "workloads" / STACK / "config" / "prometheus.yml.j2"
LINE = re.compile(r"^(\S+Z)  (\S+)\.(\d+)\.(\w+)@(\S+)  (.*)$")


def credentials(lab: Lab) -> dict[str, str]:
    found: dict[str, str] = json.loads(lab.state.credentials.read_text())
    return found


@pytest.fixture(scope="module")
def admin(lab: Lab) -> Iterator[httpx.Client]:
    """HTTP through HAProxy with the cluster's admin credential."""
    with httpx.Client(
        base_url=lab.url, auth=("admin", credentials(lab)["admin_password"]), timeout=30, verify=lab.tls
    ) as client:
        yield client


def manager(lab: Lab) -> Node:
    return lab.inventory.managers[0]


def running_tasks(lab: Lab) -> dict[str, set[str]]:
    """Each service of the stack -> the ids of its running tasks."""
    out = lab.nodes.run(
        manager(lab),
        f"for s in $(docker stack services -q {STACK}); do docker service ps $s --filter desired-state=running "
        "--format '{{.Name}} {{.ID}}'; done",
    ).stdout
    found: dict[str, set[str]] = {}
    for line in out.split("\n"):
        if line.strip():
            name, task = line.split()
            found.setdefault(name.rsplit(".", 1)[0].removeprefix(f"{STACK}_"), set()).add(task)
    return found


def prometheus(admin: httpx.Client, query: str) -> list[dict[str, Any]]:
    response = admin.get("/prometheus/api/v1/query", params={"query": query})
    assert response.status_code == 200, response.text[:300]
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def wait_for(what: str, check: Callable[[], object], timeout: float = 90) -> None:
    """Poll `check()` (truthy when done) for up to `timeout` seconds (Prometheus scrapes every 15 s)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return
        time.sleep(3)
    pytest.fail(f"{what}: not after {timeout:.0f}s (last: {last!r})")


def test_fab_logs_has_lines_from_every_replica_with_time_and_task(lab: Lab) -> None:
    out = fab("logs", "api", "--tail", "30").stdout
    lines = [LINE.match(line) for line in out.splitlines() if line.strip()]
    assert lines and all(lines), out[-2000:]
    seen = {(m.group(3), m.group(5)) for m in lines if m}
    workers = {w.name for w in lab.inventory.workers}
    assert {node for _, node in seen} == workers, f"a line from each api task, one per worker: {seen}"
    assert {m.group(2) for m in lines if m} == {"api"}
    times = [m.group(1) for m in lines if m]
    assert times == sorted(times), "one time line across tasks"
    one = fab("logs", "api", "--tail", "20", "--task", "2", "--grep", "healthz").stdout.splitlines()
    assert one and all(".2." in line.split("  ")[1] and "healthz" in line for line in one)


def test_fab_logs_follow_ends_after_its_window(lab: Lab) -> None:
    started = time.monotonic()
    done = fab("logs", "ui", "--follow", "--follow-for", "5s", "--tail", "1")
    assert done.returncode == 0 and time.monotonic() - started < 60
    assert done.stdout.strip(), "the tail comes first, then what is new"


def test_fab_events_shows_a_service_update_made_here(lab: Lab) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    mark = f"obs-test-{uuid.uuid4().hex[:8]}"
    service = f"{STACK}_email"
    # A service label changes the spec (an update event) without replacing any task.
    lab.nodes.run(manager(lab), f"docker service update --quiet --detach --label-add {mark}=1 {service}")

    def ours(out: str) -> list[str]:
        return [
            line
            for line in out.splitlines()
            if line.split()[1:4] == ["service", "update", service]
            and datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")) >= before
        ]

    try:
        # Managers emit the event as they apply the change: ask again (3 times at most, 2 s apart).
        for attempt in range(3):
            out = fab("events", "--since", "2m", "--type", "service").stdout
            if ours(out) or attempt == 2:
                break
            time.sleep(2)
    finally:
        lab.nodes.run(manager(lab), f"docker service update --quiet --detach --label-rm {mark} {service}")
    assert ours(out), out[-2000:]
    assert all(line.split()[1] == "service" for line in out.splitlines()), "--type service shows services only"


def test_changing_a_config_rolls_exactly_the_services_that_mount_it(lab: Lab) -> None:
    original = PROMETHEUS_CONFIG.read_text()
    before = running_tasks(lab)
    try:
        PROMETHEUS_CONFIG.write_text(original + f"# changed by a lab test: {uuid.uuid4().hex}\n")
        out = fab("deploy-stack").stdout
        created = re.search(r"created Docker config (registration_prometheus_yml_[0-9a-f]{12})", out)
        assert created, out[-3000:]
        after = running_tasks(lab)
        rolled = {service for service in before if before[service] != after.get(service)}
        assert rolled == {"prometheus"}, f"only the service that mounts the config: {rolled}"
    finally:
        PROMETHEUS_CONFIG.write_text(original)
        restored = fab("deploy-stack").stdout
    # No service mounts the changed version any more, but the revision that deployed it names it: it
    # is kept for `fab rollback-stack` (pruned once that revision leaves the history).
    assert "removed unused Docker config" not in restored
    listed = lab.nodes.run(lab.inventory.managers[0], "docker config ls --format '{{.Name}}'").stdout.split()
    assert created.group(1) in listed
    assert fab("deploy-stack").stdout.rstrip().endswith("result: no change: the cluster was already as wanted")


def test_prometheus_scrapes_every_engine_service_and_haproxy(lab: Lab, admin: httpx.Client) -> None:
    assert httpx.get(lab.url + "/prometheus/api/v1/targets", timeout=10, verify=lab.tls).status_code == 401, (
        "admin only"
    )
    engines = {f"{n.private_ip}:9323" for n in (*lab.inventory.managers, *lab.inventory.workers)}
    replicas = {s: len(tasks) for s, tasks in running_tasks(lab).items() if s in PYTHON_SERVICES}

    def all_up() -> object:
        targets = admin.get("/prometheus/api/v1/targets").json()["data"]["activeTargets"]
        up = [t for t in targets if t["health"] == "up"]
        jobs: dict[str, list[dict[str, dict[str, str]]]] = {}
        for target in up:
            jobs.setdefault(target["labels"]["job"], []).append(target)
        services: dict[str, int] = {}
        for target in jobs.get("services", []):
            services[target["labels"]["service"]] = services.get(target["labels"]["service"], 0) + 1
        done = (
            {t["labels"]["instance"] for t in jobs.get("docker-engines", [])} == engines
            and [t["labels"]["instance"] for t in jobs.get("haproxy", [])] == [f"{lab.inventory.lb.private_ip}:8405"]
            and services == replicas
            and len(up) == len(targets)
        )
        return done or [(t["labels"]["job"], t["labels"]["instance"], t["health"], t["lastError"]) for t in targets]

    wait_for("every target up", all_up)
    assert set(replicas) == PYTHON_SERVICES


def test_a_registration_through_haproxy_raises_the_registrations_counter(
    lab: Lab, admin: httpx.Client, api: httpx.Client
) -> None:
    # Per api replica, not summed: a replica replaced by an earlier test (a roll, a reboot) takes its count
    # with it when its series goes stale, so the sum can fall by more than a registration adds (CI34).
    def registrations() -> dict[str, float]:
        return {r["metric"]["instance"]: float(r["value"][1]) for r in prometheus(admin, "registrations_total")}

    def counted(before: dict[str, float]) -> bool:
        """Some replica's count moved and holds a registration: one more than before, a replica not scraped
        before (it started from 0), or one restarted at an address reused since (it started again from 0)."""
        return any(value >= 1 and value != before.get(instance) for instance, value in registrations().items())

    wait_for("registrations_total is scraped", lambda: prometheus(admin, "sum(registrations_total)"))
    before = registrations()
    email = fresh_email()
    eligible(api, email)
    assert api.post("/getotp", json={"email": email}).status_code == 200
    code = otp_from(mails(lab, email)[-1])
    verified = api.post("/authen", json={"email": email, "otp": code})
    assert verified.status_code == 200
    body = {"firstname": "Grace", "lastname": "Hopper", "email": email, "proof": verified.json()["proof"]}
    registered = api.post("/register", json=body)
    assert registered.status_code == 200, registered.text
    try:
        wait_for("the registration counted", lambda: counted(before))
    except pytest.fail.Exception:  # say what Prometheus saw: which replicas, which answered its scrapes
        targets = admin.get("/prometheus/api/v1/targets").json()["data"]["activeTargets"]
        seen = [
            (t["labels"]["instance"], t["health"], t["lastError"])
            for t in targets
            if t["labels"].get("service") == "api"
        ]
        pytest.fail(f"the registration not counted in 90 s: before {before}, now {registrations()}, api targets {seen}")
    wait_for("the OTP mail counted", lambda: prometheus(admin, "sum(otp_mails_sent_total) > 0"))


def test_status_shows_rates_and_the_map(lab: Lab, api: httpx.Client) -> None:
    # A rate needs two scrapes (15 s apart) of a counter that moved inside its minute: keep a little
    # API traffic going (an address that is not eligible: 403, no mail) until the API's rate shows.
    deadline = time.monotonic() + 150
    while True:
        for _ in range(3):
            api.post("/getotp", json={"email": "not-eligible@example.org"})
        out = fab("status", "--map").stdout
        rates = out.split("(Prometheus of registration):\n")[1].split("\n\n")[0]
        if "\napi " in rates or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert rates.startswith("SERVICE  ") and "api " in rates, out[-3000:]
    cluster_map = out.split("cluster map (running tasks per node):\n")[1]
    for worker in lab.inventory.workers:
        assert re.search(rf"^{worker.name} \(worker; ready, active\): [1-9]\d* task\(s\)$", cluster_map, re.M)
    for node in lab.inventory.managers:
        assert re.search(rf"^{node.name} \(manager, \w+; ready, drain\): 0 task\(s\)$", cluster_map, re.M)
    assert "registration_prometheus.1" in cluster_map


def test_the_cluster_map_page_is_for_the_admin_and_shows_every_node(lab: Lab, admin: httpx.Client) -> None:
    fab("cluster-map")
    try:
        assert httpx.get(lab.url + "/map/", timeout=10, verify=lab.tls).status_code == 401
        wrong = httpx.get(lab.url + "/map/", auth=("admin", "not-the-password"), timeout=10, verify=lab.tls)
        assert wrong.status_code == 401
        # HAProxy marks a map server up after two good health checks (rise 2, inter 1 s).
        page = admin.get("/map/")
        deadline = time.monotonic() + 60
        while page.status_code == 503 and time.monotonic() < deadline:
            time.sleep(2)
            page = admin.get("/map/")
        assert page.status_code == 200 and '<meta http-equiv="refresh"' in page.text
        for node in (*lab.inventory.managers, *lab.inventory.workers):
            assert f">{node.name} <" in page.text
        views = admin.get("/map/map.json").json()
        assert sum(len(v["tasks"]) for v in views if v["role"] == "manager") == 0
        assert "no change" in fab("cluster-map").stdout
    finally:
        fab("cluster-map", "--remove")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("logs", "nosuch"), "no service 'nosuch' on the swarm; services: registration_api, "),
        (("logs", "api", "--since", "5x"), "--since=5x: is not a duration"),
        (("logs", "api", "--grep", "("), "--grep=(: is not a valid regular expression"),
        (("events", "--since", "soon"), "--since=soon: is not a duration"),
        (("events", "--type", "volume"), "--type=volume: has no swarm event type volume"),
    ],
)
def test_bad_input_gets_a_clear_error(lab: Lab, args: tuple[str, ...], message: str) -> None:
    done = fab(*args, check=False)
    assert done.returncode == 1 and message in done.stderr, done.stderr


@pytest.mark.parametrize("args", [("logs", "api", "--since", "5x"), ("events", "--type", "volume")])
def test_malformed_options_are_refused_before_anything_runs(lab: Lab, args: tuple[str, ...]) -> None:
    # A cluster that does not exist: the options are checked before its inventory is even read.
    done = fab(*args, env={"SWARMLAB_CLUSTER": "no-such-lab"}, check=False)
    assert done.returncode == 1 and "invalid option(s)" in done.stderr and "is not up" not in done.stderr
