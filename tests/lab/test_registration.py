"""The registration system on the lab, end to end through HAProxy: the flow a student follows, sessions
that survive UI replacement, refusals, and secrets that stay secret (data surviving the database's
moves is test_day2's maintain-nodes test: every worker rebooted in turn, the student kept). Traffic goes to 127.0.0.1 (the lb node's published HTTPS port, verified against the lab's CA) and to the lab's own nodes only."""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid

import httpx
import pytest

from cluster.errors import CommandFailed
from cluster.inventory import Node
from cluster.workload import load_workload
from tests.lab.conftest import LOG, Lab, container_of, lab_config

pytestmark = pytest.mark.lab
STACK = "registration"


def fresh_email() -> str:
    return f"student-{uuid.uuid4().hex[:10]}@example.org"


def eligible(api: httpx.Client, *emails: str) -> None:
    # The eligible list is the admin's own credential, read here (other test modules call this too).
    credentials = json.loads(lab_config().state(provider="lab").credentials.read_text())
    response = api.post(
        "/create_email_list", json={"email_list": list(emails)}, auth=("admin", credentials["admin_password"])
    )
    assert response.status_code == 200, response.text


def mails(lab: Lab, to: str, count: int = 1, timeout: float = 30) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.get(lab.url + "/mail/messages", params={"to": to}, timeout=10, verify=lab.tls).json()
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"expected {count} mail(s) to {to}, got {found}"
            return list(found)
        time.sleep(0.5)


def otp_from(mail: dict[str, str]) -> str:
    match = re.search(r"\b(\d{6})\b", mail["body"])
    assert match, mail
    return match.group(1)


def manager(lab: Lab) -> Node:
    return lab.inventory.managers[0]


def node_of(lab: Lab, service: str) -> Node:
    out = lab.nodes.run(
        manager(lab), f"docker service ps {STACK}_{service} --filter desired-state=running --format '{{{{.Node}}}}'"
    ).stdout.split()
    assert out, f"no running task of {service}"
    return lab.inventory.node(out[0])


def in_service(lab: Lab, service: str, command: str, check: bool = True) -> str:
    """Run a command inside the service's running container, on whichever worker runs it."""
    node = node_of(lab, service)
    find = f"docker ps -q -f label=com.docker.swarm.service.name={STACK}_{service} | head -n1"
    return lab.nodes.run(node, f"docker exec $({find}) sh -c {shlex.quote(command)}", check=check).stdout


REDIS_SECRETS = {"redis": "redis_password", "redis-session": "redis_session_password"}


def redis_cli(lab: Lab, service: str, command: str) -> str:
    # As sql(): the password is read inside the container from its secret file, never on our command line.
    secret = REDIS_SECRETS[service]
    return in_service(lab, service, f'REDISCLI_AUTH="$(cat /run/secrets/{secret})" redis-cli -h 127.0.0.1 {command}')


def sql(lab: Lab, query: str) -> str:
    # The password is read inside the container from its secret file: never on our command line.
    command = f"PGPASSWORD=$(cat /run/secrets/db_password) psql -h 127.0.0.1 -U registration -d registration -tAc {shlex.quote(query)}"
    return in_service(lab, "postgres", command).strip()


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def ui_request_and_verify(lab: Lab, browser: httpx.Client, email: str) -> None:
    page = browser.get("/")
    assert page.status_code == 200
    sent = browser.post("/", data={"email": email, "csrf": csrf(page)})
    assert sent.status_code == 200 and 'name="otp"' in sent.text, sent.text[:500]
    code = otp_from(mails(lab, email)[-1])
    verified = browser.post("/authen", data={"otp": code, "csrf": csrf(sent)})
    assert verified.status_code == 200 and 'name="firstname"' in verified.text, verified.text[:500]


def ui_register(browser: httpx.Client, first: str, last: str) -> httpx.Response:
    form = browser.get("/reg")
    assert form.status_code == 200, form.text[:500]
    return browser.post("/reg", data={"firstname": first, "lastname": last, "csrf": csrf(form)})


def test_full_flow_through_haproxy(lab: Lab, api: httpx.Client) -> None:
    email = fresh_email()
    eligible(api, email)
    with httpx.Client(base_url=lab.url, follow_redirects=True, timeout=30, verify=lab.tls) as browser:
        ui_request_and_verify(lab, browser, email)
        done = ui_register(browser, "Ada", "Lovelace")
    assert done.status_code == 200
    student_id = sql(lab, f"SELECT id FROM student WHERE email = '{email}'")
    assert student_id.isdigit()
    assert (
        sql(lab, f"SELECT firstname || ' ' || lastname FROM enroll WHERE student_id = {student_id}") == "Ada Lovelace"
    )
    confirmation = mails(lab, email, count=2)[-1]
    assert student_id in confirmation["body"]


def test_sessions_survive_the_ui_scaled_to_zero_and_back(lab: Lab, api: httpx.Client) -> None:
    """The seed's own test: between verifying and registering, every UI container is replaced."""
    email = fresh_email()
    eligible(api, email)
    with httpx.Client(base_url=lab.url, follow_redirects=True, timeout=30, verify=lab.tls) as browser:
        ui_request_and_verify(lab, browser, email)
        before = container_of(browser.get("/reg"))
        lab.nodes.run(manager(lab), f"docker service scale -d {STACK}_ui=0")
        lab.nodes.run(manager(lab), f"docker service scale {STACK}_ui=2", timeout=180)
        deadline = time.monotonic() + 60
        while browser.get("/healthz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(1)
        done = ui_register(browser, "Grace", "Hopper")
        assert done.status_code == 200, done.text[:500]
        assert container_of(done) != before
    assert sql(lab, f"SELECT count(*) FROM student WHERE email = '{email}'") == "1"
    values = load_workload(STACK, lab.config.environment).values
    assert values is not None
    lab.nodes.run(manager(lab), f"docker service scale {STACK}_ui={values['edge_replicas']}", timeout=180)


def test_the_otp_store_keeps_an_acknowledged_write_when_its_server_is_killed(lab: Lab, api: httpx.Client) -> None:
    """Redis answers a write once it is in its append-only file, fsynced: killed right after (SIGKILL, no
    save on the way out), it comes back with it. On RDB snapshots alone a worker killed under it lost the
    eligible list's latest addresses (make chaos kill-broker-worker, 2026-12-08: an eligible student's
    getotp answered as for an unknown address, and no mail came)."""
    email = fresh_email()
    eligible(api, email)
    node = node_of(lab, "redis")
    find = f"docker ps -q -f label=com.docker.swarm.service.name={STACK}_redis"
    killed = lab.nodes.run(node, find).stdout.split()
    assert len(killed) == 1, killed
    lab.nodes.run(node, f"docker kill {killed[0]}")
    deadline = time.monotonic() + 120
    while True:
        try:
            running = lab.nodes.run(node_of(lab, "redis"), find).stdout.split()
            if running and running != killed and redis_cli(lab, "redis", "PING").strip() == "PONG":
                break
        except (CommandFailed, AssertionError):  # no task running yet, still loading, or it moved meanwhile
            pass
        assert time.monotonic() < deadline, "the OTP store's Redis did not come back within 120 s"
        time.sleep(1)
    assert redis_cli(lab, "redis", f"SISMEMBER otp:eligible {email}").strip() == "1", "the acknowledged write was lost"
    wait_until_the_api_answers(lab, api)  # the otp worker's connections to the store are back too


def wait_until_the_api_answers(lab: Lab, api: httpx.Client, timeout: float = 180) -> None:
    """The whole OTP path works again: an eligible address's getotp answers and its mail arrives (api,
    broker, otp, its Redis, email_otp, the mail sink), not only the otp worker's answer for an address
    on no list (which mails nothing: after a move, the mail path can still be coming back)."""
    deadline = time.monotonic() + timeout
    while True:
        email = fresh_email()
        try:
            eligible(api, email)
            status = api.post("/getotp", json={"email": email}).status_code
        except (httpx.TimeoutException, AssertionError):  # the API's deadline or the admin path: not yet
            status = 0
        if status == 200:
            try:
                mails(lab, email, timeout=20)
                return
            except AssertionError:  # answered, but its mail has not come: the mail path is not back yet
                status = 0
        assert status in (0, 502, 503, 504), f"the API answered {status} while recovering"
        assert time.monotonic() < deadline, "the API's OTP path did not come back after the worker drain"
        time.sleep(2)


def test_an_unknown_email_gets_the_eligible_answers_and_no_mail(lab: Lab, api: httpx.Client) -> None:
    email = fresh_email()  # on no list
    response = api.post("/getotp", json={"email": email})
    assert response.status_code == 200 and response.json()["results"] == "sent", "no oracle of who is eligible"
    wrong = api.post("/authen", json={"email": email, "otp": "123456"})
    assert wrong.status_code == 401 and wrong.json()["results"] == "invalid_otp"
    time.sleep(1)
    assert httpx.get(lab.url + "/mail/messages", params={"to": email}, verify=lab.tls).json() == []


def test_six_wrong_otps_lock_their_source_even_for_the_right_one(lab: Lab, api: httpx.Client) -> None:
    # Straight at the API, naming no session: the source is the client address (an owner in a session
    # of their own still gets in: tests/lab/test_hardening.py).
    email = fresh_email()
    eligible(api, email)
    assert api.post("/getotp", json={"email": email}).status_code == 200
    right = otp_from(mails(lab, email)[-1])
    wrong = "000000" if right != "000000" else "111111"
    statuses = [api.post("/authen", json={"email": email, "otp": wrong}).status_code for _ in range(5)]
    assert statuses == [401] * 5
    locked = api.post("/authen", json={"email": email, "otp": right})
    assert locked.status_code == 429 and locked.json()["results"] == "locked"


def test_reused_and_expired_otps_are_refused(lab: Lab, api: httpx.Client) -> None:
    email = fresh_email()
    eligible(api, email)
    api.post("/getotp", json={"email": email}).raise_for_status()
    code = otp_from(mails(lab, email)[-1])
    assert api.post("/authen", json={"email": email, "otp": code}).status_code == 200
    reused = api.post("/authen", json={"email": email, "otp": code})
    assert reused.status_code == 401
    # Expiry is Redis's own TTL: shorten the live OTP's TTL to one second and let it lapse.
    api.post("/getotp", json={"email": email}).raise_for_status()
    code = otp_from(mails(lab, email, count=2)[-1])
    assert redis_cli(lab, "redis", f"EXPIRE otp:code:{email} 1").strip() == "1"
    time.sleep(2)
    expired = api.post("/authen", json={"email": email, "otp": code})
    assert expired.status_code == 401 and expired.json()["results"] == "expired"


def test_malformed_requests_get_4xx_not_500(api: httpx.Client) -> None:
    bad_json = api.post("/getotp", content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 422 and bad_json.json()["results"] == "invalid_request", bad_json.text
    assert api.post("/register", json={"email": "x@example.org"}).status_code == 422
    assert api.post("/authen", json={"email": "x@example.org", "otp": "12"}).status_code == 422


def test_registering_twice_is_refused(lab: Lab, api: httpx.Client) -> None:
    email = fresh_email()
    eligible(api, email)
    for attempt in range(2):
        api.post("/getotp", json={"email": email}).raise_for_status()
        code = otp_from(mails(lab, email, count=attempt * 2 + 1)[-1])
        verified = api.post("/authen", json={"email": email, "otp": code})
        assert verified.status_code == 200
        body = {"firstname": "Twice", "lastname": "Tried", "email": email, "proof": verified.json()["proof"]}
        response = api.post("/register", json=body)
        assert response.status_code == (200 if attempt == 0 else 409), response.text
    assert sql(lab, f"SELECT count(*) FROM student WHERE email = '{email}'") == "1"


def test_api_requires_credentials_and_serves_openapi_docs(lab: Lab, api: httpx.Client) -> None:
    assert httpx.post(lab.url + "/api/getotp", json={"email": "a@example.org"}, verify=lab.tls).status_code == 401
    # The UI's API credential cannot change the eligible list: that is the admin's.
    refused = api.post("/create_email_list", json={"email_list": ["a@example.org"]})
    assert refused.status_code == 403
    assert httpx.get(lab.url + "/api/docs", verify=lab.tls).status_code == 200


def test_the_ui_cannot_reach_the_database_or_the_broker(lab: Lab) -> None:
    probe = (
        'python -c "import socket,sys\n'
        "for host, port in (('postgres', 5432), ('rabbitmq', 5672), ('api', 8000)):\n"
        "    try:\n        socket.create_connection((host, port), timeout=3).close(); print(host, 'open')\n"
        "    except OSError: print(host, 'closed')\""
    )
    out = in_service(lab, "ui", probe)
    assert "postgres closed" in out and "rabbitmq closed" in out
    assert "api open" in out, "the probe itself must be able to succeed"


def test_no_secret_value_appears_anywhere(lab: Lab) -> None:
    credentials = json.loads((lab.state.credentials).read_text())
    generated = load_workload(STACK, lab.config.environment).manifest.secrets.generated
    values = [credentials[key] for key in generated]
    # api, admin, db, a broker user per RPC service (6), each Redis (2), the HMAC keys (otp, api, ui)
    assert len(values) == 14
    leader = manager(lab)
    places = {"rendered stack": lab.nodes.run(leader, f"cat /root/.swarmlab/stacks/{STACK}.yml").stdout}
    services = lab.nodes.run(leader, f"docker stack services {STACK} --format '{{{{.Name}}}}'").stdout.split()
    places["service inspect"] = lab.nodes.run(leader, "docker service inspect " + " ".join(services)).stdout
    for service in services:
        # Task by task: a whole service's stream stops without ending once its history is a few thousand
        # lines (moby/moby#38640; seen on a lab an hour old), while each task's own stream ends.
        places[f"logs of {service}"] = lab.nodes.run(
            leader,
            f"for t in $(docker service ps -q {service}); do "
            "timeout 60 docker service logs --raw $t 2>&1 | tail -n 2000; done",
        ).stdout
    places["fab output"] = "\n".join(LOG.outputs)
    assert len(places["service inspect"]) > 1000 and any(len(v) > 0 for k, v in places.items() if k.startswith("logs"))
    for where, text in places.items():
        for value in values:
            assert value not in text, f"a secret value appears in {where}"
    assert oct((lab.state.credentials).stat().st_mode & 0o777) == "0o600"
