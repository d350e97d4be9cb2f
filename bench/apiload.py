"""The registration API under load with a body of its own per request: authenticated `getotp` for
distinct eligible addresses, and whole flows (eligible list, OTP request, the mail read from the lab's
mail sink, authentication, registration), every request recorded.

Standard library and httpx only: bench/throughput.py copies this file (with httpx and its pure-Python
dependencies) into the lb node and runs it there (`python3 apiload.py SPEC`), so that both paths,
through HAProxy and straight at the workers, start at the same place as `hey` does; bench/chaos.py
drives the same flows from the host. Bounded: a run stops at its deadline or after its last address.

Why one address per request: `getotp` allows `otp_rate_per_email` requests per e-mail in a rate
window (5 per 10 minutes), and within `resend_window` a second request mails nothing; a fixed body
would time the 429 answers after the 5th request. All of a run's load comes from one client address
(the lb node), which `otp_rate_per_client` bounds: the lab's values raise it to 100000 per 10 minutes
(workloads/registration/values/lab.yaml), and a run's requests stay below that (see throughput.py).
"""

from __future__ import annotations

import json
import re
import ssl
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

# The flow's steps, in order; "flow" is a whole flow (from the eligible list to the registration).
STEPS = ("eligible", "getotp", "mail", "authen", "register")
ELIGIBLE_BATCH = 10_000  # the API's largest eligible list per request
# A flow's POST whose connection failed or was cut (its API's node died) is sent again with its key.
FLOW_REPEATS = 2
REPEAT_PAUSE = 0.5


@dataclass
class Record:
    t: float  # seconds since the load started
    kind: str  # "get", a flow step, or "flow"
    status: int  # 0: no HTTP answer (connection error, timeout)
    ms: float
    error: str = ""
    answer: str = ""  # the reply's `results` when it is a word ("sent", "ok"), else its keys; who said a 5xx
    tries: int = 1  # more than one: a cut connection, the request sent again with its Idempotency-Key


@dataclass(frozen=True)
class Target:
    """Where the requests go: the API's base URL and the mail sink's (its `/messages`)."""

    api: str
    mail: str


def answer_of(response: httpx.Response) -> str:
    """What a reply said, short: `results` when it is a string, else the names of its keys."""
    try:
        body = response.json()
    except ValueError:
        return ""
    results = body.get("results") if isinstance(body, dict) else None
    if isinstance(results, str):
        return results[:40]
    return ",".join(sorted(results))[:40] if isinstance(results, dict) else ""


def failure_of(response: httpx.Response) -> str:
    """Who answered a 5xx: the API's code (`backend_unavailable`), or the first words of a page that
    is not the API's (HAProxy's own 503 says "No server is available to handle this request.")."""
    said = answer_of(response)
    if said:
        return said
    text = re.sub(r"<[^>]*>", " ", response.text)
    return " ".join(text.split())[:80] or "(empty body)"


class Recorder:
    """Every request made through it, with its status, answer and latency (thread-safe)."""

    def __init__(self, started: float, answers: bool = False) -> None:
        self.started = started
        self.answers = answers  # parse each reply's `results` (the bench's status counts; chaos needs none)
        self.records: list[Record] = []
        self.lock = threading.Lock()

    def call(
        self, client: httpx.Client, kind: str, method: str, url: str, repeats: int = 0, **kwargs: Any
    ) -> httpx.Response | None:
        """One request, recorded once. With `repeats`, a connection that failed or was cut is tried again
        (up to `repeats` more times, with the same headers, so the same Idempotency-Key), as the UI and
        the API's documentation tell clients to; the record says how many tries it took."""
        began = time.monotonic()
        for tries in range(1, repeats + 2):
            try:
                response = client.request(method, url, **kwargs)
            except httpx.TransportError as error:
                if tries <= repeats:
                    time.sleep(REPEAT_PAUSE)
                    continue
                self.record(kind, 0, began, type(error).__name__, tries=tries)
                return None
            except httpx.HTTPError as error:
                self.record(kind, 0, began, type(error).__name__, tries=tries)
                return None
            if response.status_code >= 500:
                answer = failure_of(response)  # always: which hop failed is what a chaos run needs
            else:
                answer = answer_of(response) if self.answers else ""
            self.record(kind, response.status_code, began, answer=answer, tries=tries)
            return response
        raise AssertionError("unreachable: the last try returns")

    def record(
        self, kind: str, status: int, began: float, error: str = "", *, answer: str = "", tries: int = 1
    ) -> None:
        now = time.monotonic()
        with self.lock:
            self.records.append(Record(began - self.started, kind, status, (now - began) * 1000, error, answer, tries))


@dataclass(frozen=True)
class Credentials:
    api: tuple[str, str]
    admin: tuple[str, str]


def read_code(
    client: httpx.Client, target: Target, email: str, stop: threading.Event, *, timeout: float, poll: float
) -> str:
    """The OTP in the newest mail to `email` at the mail sink, polled until `timeout`; "" if none came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            found = client.get(f"{target.mail}/messages", params={"to": email}).json()
        except (httpx.HTTPError, ValueError):
            found = []
        match = re.search(r"\b(\d{6})\b", found[-1]["body"]) if found else None
        if match:
            return match.group(1)
        time.sleep(poll)
    return ""


def flow(
    recorder: Recorder,
    client: httpx.Client,
    target: Target,
    email: str,
    credentials: Credentials,
    *,
    stop: threading.Event,
    mail_timeout: float = 30,
    poll: float = 0.3,
    record_mail: bool = False,
) -> bool:
    """One student's whole registration; True when it registered. A step that fails ends the flow. Each
    POST carries an Idempotency-Key of its own and is sent again with it after a cut connection."""

    def keyed() -> dict[str, Any]:
        return {"headers": {"Idempotency-Key": uuid.uuid4().hex}, "repeats": FLOW_REPEATS}

    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("eligible", "/create_email_list", {"json": {"email_list": [email]}, "auth": credentials.admin, **keyed()}),
        ("getotp", "/getotp", {"json": {"email": email}, "auth": credentials.api, **keyed()}),
    ]
    for kind, path, kwargs in steps:
        response = recorder.call(client, kind, "POST", target.api + path, **kwargs)
        if response is None or response.status_code != 200:
            return False
    began = time.monotonic()
    code = read_code(client, target, email, stop, timeout=mail_timeout, poll=poll)
    if not code:
        if not stop.is_set():  # the load ending mid-flow is no failure
            recorder.record("mail", 0, time.monotonic(), f"no OTP mail within {mail_timeout:g} s")
        return False
    if record_mail:
        recorder.record("mail", 200, began)
    authen = {"json": {"email": email, "otp": code}, "auth": credentials.api, **keyed()}
    if (r := recorder.call(client, "authen", "POST", target.api + "/authen", **authen)) is None or r.status_code != 200:
        return False
    body = {"firstname": "Bench", "lastname": "Student", "email": email, "proof": r.json().get("proof", "")}
    r = recorder.call(client, "register", "POST", target.api + "/register", json=body, auth=credentials.api, **keyed())
    return r is not None and r.status_code == 200


def addresses(run: str, kind: str, count: int) -> list[str]:
    """`count` distinct addresses of this run (`run`: a token no other run shares, so no address is
    asked for twice within a rate window)."""
    return [f"bench-{run}-{kind}{i}@example.org" for i in range(count)]


def batches(items: Sequence[str], size: int = ELIGIBLE_BATCH) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def quantiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms (0 when fewer than two values)."""
    if len(latencies) < 2:
        return (round(latencies[0], 1), round(latencies[0], 1)) if latencies else (0.0, 0.0)
    q = statistics.quantiles(sorted(latencies), n=100)
    return round(q[49], 1), round(q[98], 1)


def status_of(record: Record) -> str:
    """How a request was answered, for the counts: `200 sent`, `429 rate_limited`, `0 ReadTimeout`."""
    said = record.answer or record.error
    return f"{record.status} {said}" if said else str(record.status)


def summarize(records: Sequence[Record], kind: str) -> dict[str, Any]:
    """Requests of one kind: how many, how they were answered, p50/p99 of the answered ones."""
    chosen = [r for r in records if r.kind == kind]
    statuses: dict[str, int] = {}
    for record in chosen:
        statuses[status_of(record)] = statuses.get(status_of(record), 0) + 1
    p50, p99 = quantiles([r.ms for r in chosen if r.status])
    return {"requests": len(chosen), "statuses": dict(sorted(statuses.items())), "p50_ms": p50, "p99_ms": p99}


def getotp_result(records: Sequence[Record], seconds: float) -> dict[str, Any]:
    summary = summarize(records, "getotp")
    return {"rps": round(summary["requests"] / seconds, 1) if seconds else 0.0, "seconds": seconds, **summary}


def flows_result(records: Sequence[Record], seconds: float) -> dict[str, Any]:
    """Flows per second (registered ones), every step's counts, and the whole flow's p50/p99."""
    whole = summarize(records, "flow")
    done = whole["statuses"].get("200", 0)
    requests = sum(1 for r in records if r.kind in STEPS and r.kind != "mail")
    return {
        "flows_per_s": round(done / seconds, 2) if seconds else 0.0,
        "flows_completed": done,
        "flows_started": whole["requests"],
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "p50_ms": whole["p50_ms"],
        "p99_ms": whole["p99_ms"],
        "seconds": seconds,
        "steps": {step: summarize(records, step) for step in STEPS},
    }


def mail_sink(client: httpx.Client, candidates: Sequence[str]) -> str:
    """The first of `candidates` (mail sink base URLs) that answers: direct, only the worker running
    the sink's one task publishes its port."""
    for base in candidates:
        try:
            if client.get(f"{base}/healthz", timeout=5).status_code == 200:
                return base
        except httpx.HTTPError:
            continue
    raise SystemExit(f"no mail sink answers at any of {', '.join(candidates)}")


def drive(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measure as `spec` says; its raw records (the caller summarizes them)."""
    (api_user, api_password), (admin_user, admin_password) = spec["api_auth"], spec["admin_auth"]
    credentials = Credentials((api_user, api_password), (admin_user, admin_password))
    # HAProxy's certificate is verified against the lab's CA; direct is plain HTTP.
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=spec["ca"]) if spec.get("ca") else False
    mode, seconds, concurrency = spec["mode"], float(spec["seconds"]), int(spec["concurrency"])
    emails = addresses(spec["run"], "o" if mode == "getotp" else "f", int(spec["max_requests"]))
    with httpx.Client(verify=verify, timeout=60) as setup:
        mail = mail_sink(setup, spec["mail"])
        targets = [Target(api, mail) for api in spec["apis"]]
        if mode == "getotp":  # eligible beforehand, untimed: the measure is the OTP path alone
            for batch in batches(emails):
                done = setup.post(
                    targets[0].api + "/create_email_list", json={"email_list": batch}, auth=credentials.admin
                )
                done.raise_for_status()
    pending = iter(emails)
    lock, stop = threading.Lock(), threading.Event()
    started = time.monotonic()
    recorder = Recorder(started, answers=True)

    def worker(target: Target) -> None:
        with httpx.Client(verify=verify, timeout=60) as client:
            while time.monotonic() - started < seconds:
                with lock:
                    email = next(pending, None)
                if email is None:
                    return
                if mode == "getotp":
                    recorder.call(
                        client, "getotp", "POST", target.api + "/getotp", json={"email": email}, auth=credentials.api
                    )
                    continue
                began = time.monotonic()
                ok = flow(recorder, client, target, email, credentials, stop=stop, poll=0.05, record_mail=True)
                recorder.record("flow", 200 if ok else 0, began)

    # Daemons: a thread still stuck after the bounded join must not keep the process (and the bench) waiting.
    threads = [
        threading.Thread(target=worker, args=(targets[i % len(targets)],), daemon=True) for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    stop.set()
    elapsed = round(time.monotonic() - started, 2)
    return {"seconds": elapsed, "records": [asdict(r) for r in recorder.records]}


if __name__ == "__main__":
    # The spec is a file (it holds the API's credentials: never on a command line or in the env).
    with open(sys.argv[1]) as spec_file:
        print(json.dumps(drive(json.load(spec_file))))
