"""Throughput side by side, in one run, each once through HAProxy and once straight at every worker at
the same time, all from inside the lb node (so both paths start at the same place and all traffic
stays inside the lab):

- `/` (the UI): requests per second and p50/p99 from Debian's `hey`;
- `api_getotp`: authenticated `POST /api/getotp`, one distinct eligible e-mail per request (made
  eligible beforehand, untimed), so neither a 401 nor a rate limit answers: the whole OTP path runs
  (api, RabbitMQ, otp, Redis, email_otp, the mail sink). `hey` sends one fixed body, so this load
  comes from bench/apiload.py, copied into the lb node with httpx and run there;
- `api_flows`: whole registrations per second (eligible list, OTP, the mail read from the mail sink,
  authentication, registration), from the same generator.

The API's answers are counted by status and reply (`200 sent`) in the JSON. All the API's load comes
from one client address (HAProxy's 127.0.0.1 through it, the lb node's own address direct), which
the OTP's per-client limit counts: the lab's values set it to 100000 requests per 10 minutes, and
`check_client_budget` refuses a run that could send more. Bounded: DURATION per measure (and at most
API_MAX_REQUESTS addresses), ROUNDS measures of each.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import statistics
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import apiload
from bench.common import ENV, OUT, write_report
from cluster.config import load_config
from cluster.workload import load_workload

DURATION = "10s"
ROUNDS = 3
CONCURRENCY = 24
HEY = "/usr/local/bin/hey"
# The API's load generator in the lb node: bench/apiload.py, its spec (credentials: mode 600) and the
# pure-Python modules it imports, copied from this virtualenv (the node has Python 3.11, no httpx).
SITE = "/opt/swarmlab-bench"
LOAD_MODULES = ("httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio", "typing_extensions")
API_SECONDS = 10
API_CONCURRENCY = 24
API_MAX_REQUESTS = 6000  # addresses per getotp measure (far above what 10 s allow here)
FLOWS_MAX = 2000  # flows per measure at most


def _container() -> Any:
    return docker.from_env().containers.get(f"swarmlab-{ENV['SWARMLAB_CLUSTER']}-lb-1")


def install_hey() -> None:
    """Copy the host's hey (Debian's package) into the lb node: a bench tool, not part of the node image."""
    host_hey = shutil.which("hey")
    if host_hey is None:
        raise SystemExit("make bench needs Debian's hey on this machine: apt-get install hey")
    _container().put_archive("/", _archive({HEY: (Path(host_hey).read_bytes(), 0o755)}))


def _hey_command(url: str, concurrency: int) -> str:
    return f"{HEY} -z {DURATION} -c {concurrency} -t 10 -o csv '{url}'"


def _parse(output: str, seconds: float) -> dict[str, Any]:
    rows = [r for r in csv.DictReader(io.StringIO(output)) if r.get("status-code")]
    latencies = sorted(float(r["response-time"]) * 1000 for r in rows)
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status-code"]] = statuses.get(row["status-code"], 0) + 1
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "requests": len(rows),
        "rps": round(len(rows) / seconds, 1),
        "p50_ms": round(quantiles[49], 1),
        "p99_ms": round(quantiles[98], 1),
        "statuses": statuses,
    }


def measure(urls: list[str]) -> dict[str, Any]:
    """hey against every url at once (concurrency split between them); the totals."""
    per = max(1, CONCURRENCY // len(urls))
    script = " & ".join(f"({_hey_command(u, per)} > /tmp/hey-{i}.csv)" for i, u in enumerate(urls))
    container = _container()
    done = container.exec_run(["sh", "-c", f"{script}; wait"])
    if done.exit_code != 0:
        raise SystemExit(f"hey failed in the lb node: {done.output.decode()[-2000:]}")
    seconds = float(DURATION.rstrip("s"))
    parts = [
        _parse(container.exec_run(["cat", f"/tmp/hey-{i}.csv"]).output.decode(), seconds) for i in range(len(urls))
    ]
    statuses: dict[str, int] = {}
    for part in parts:
        for code, count in part["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return {
        "urls": urls,
        "rps": round(sum(p["rps"] for p in parts), 1),
        "p50_ms": max(p["p50_ms"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "requests": sum(p["requests"] for p in parts),
        "statuses": statuses,
    }


def _archive(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of `files` (path in the node: content, mode) for put_archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def install_load(ca: Path) -> None:
    """bench/apiload.py, the lab's CA and LOAD_MODULES (from this virtualenv) into the lb node."""
    files = {
        f"{SITE}/apiload.py": (Path(apiload.__file__).read_bytes(), 0o644),
        f"{SITE}/ca.crt": (ca.read_bytes(), 0o644),
    }
    for name in LOAD_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"the API's load generator needs {name} in this virtualenv: pip install {name}")
        origin = Path(spec.origin)
        if origin.name != "__init__.py":  # a single module (typing_extensions)
            files[f"{SITE}/site/{origin.name}"] = (origin.read_bytes(), 0o644)
            continue
        for path in origin.parent.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"{SITE}/site/{name}/{path.relative_to(origin.parent).as_posix()}"] = (path.read_bytes(), 0o644)
    _container().put_archive("/", _archive(files))


def check_client_budget(per_client: int) -> None:
    """The OTP's per-client limit must stay above what one path of a run sends from its one address
    (each round: a getotp measure and a flows measure), or the bench would time its 429 answers."""
    most = ROUNDS * (API_MAX_REQUESTS + FLOWS_MAX)
    if per_client and per_client < most:
        raise SystemExit(
            f"otp_rate_per_client is {per_client} in workloads/registration/values/lab.yaml, and the bench sends up "
            f"to {most} OTP requests from one address: raise it (0 disables it) or lower API_MAX_REQUESTS/FLOWS_MAX"
        )


def measure_api(mode: str, apis: list[str], mail: list[str], credentials: dict[str, str]) -> dict[str, Any]:
    """One measure of the API (`getotp` or `flows`) from the lb node; its summary with the status counts."""
    spec = {
        "mode": mode,
        "run": uuid.uuid4().hex[:10],
        "apis": apis,
        "mail": mail,
        "ca": f"{SITE}/ca.crt" if apis[0].startswith("https:") else "",
        "api_auth": ["api", credentials["api_password"]],
        "admin_auth": ["admin", credentials["admin_password"]],
        "seconds": API_SECONDS,
        "concurrency": API_CONCURRENCY,
        "max_requests": API_MAX_REQUESTS if mode == "getotp" else FLOWS_MAX,
    }
    container = _container()
    container.put_archive("/", _archive({f"{SITE}/spec.json": (json.dumps(spec).encode(), 0o600)}))
    # The spec is removed as soon as the generator has read it (it holds the credentials).
    script = f"python3 {SITE}/apiload.py {SITE}/spec.json; rc=$?; rm -f {SITE}/spec.json; exit $rc"
    done = container.exec_run(["sh", "-c", script], environment={"PYTHONPATH": f"{SITE}/site"}, demux=True)
    out, err = done.output
    if done.exit_code != 0:
        raise SystemExit(f"the API's load generator failed in the lb node: {(err or b'').decode()[-2000:]}")
    raw = json.loads(out)
    records = [apiload.Record(**r) for r in raw["records"]]
    summary = apiload.getotp_result if mode == "getotp" else apiload.flows_result
    return {"urls": apis, **summary(records, float(raw["seconds"]))}


def median_round(measured: list[dict[str, Any]], key: str = "rps") -> dict[str, Any]:
    """The round with the median throughput (its latencies and counts with it)."""
    return sorted(measured, key=lambda r: float(r[key]))[len(measured) // 2]


def comparison(rounds: dict[str, list[dict[str, Any]]], key: str = "rps") -> dict[str, Any]:
    """A path's row: the median round of each mode, their ratio, and every round's figure."""
    through, direct = median_round(rounds["haproxy"], key), median_round(rounds["direct"], key)
    return {
        "haproxy": through,
        "direct_all_workers": direct,
        "haproxy_over_direct": round(through[key] / direct[key], 2) if direct[key] else None,
        f"rounds_{key}": {mode: [r[key] for r in measured] for mode, measured in rounds.items()},
    }


def run() -> dict[str, Any]:
    config = load_config(environ={**ENV})
    state = config.state(provider="lab")
    inventory: dict[str, Any] = json.loads(state.inventory.read_text())
    credentials: dict[str, str] = json.loads(state.credentials.read_text())
    values = load_workload("registration", config.environment).values or {}
    check_client_budget(int(values.get("otp_rate_per_client", 0)))
    workers = [n["private_ip"] for n in inventory["nodes"] if n["role"] == "worker"]
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    install_hey()
    install_load(state.ca_cert)
    # HAProxy's HTTPS frontend (plain HTTP only redirects). ROUNDS alternating measures of each, the
    # median kept: one 10 s measure of each path varied by 20% on a quiet machine (health checks,
    # scrapes and the engines share the 2 cores).
    haproxy, direct = "https://127.0.0.1:443", [f"http://{w}" for w in workers]
    measures: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
        "ui": ("rps", lambda mode: measure([f"{haproxy}/"] if mode == "haproxy" else [f"{d}:8000/" for d in direct])),
        "api_getotp": ("rps", lambda mode: _api("getotp", mode, haproxy, direct, credentials)),
        "api_flows": ("flows_per_s", lambda mode: _api("flows", mode, haproxy, direct, credentials)),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (key, one) in measures.items():
        rounds: dict[str, list[dict[str, Any]]] = {"haproxy": [], "direct": []}
        for _ in range(ROUNDS):
            for mode, measured in rounds.items():
                measured.append(one(mode))
        results[name] = comparison(rounds, key)
        row = results[name]
        print(
            f"{name}: HAProxy {row['haproxy'][key]} {key} (p99 {row['haproxy']['p99_ms']} ms), "
            f"direct {row['direct_all_workers'][key]}; ratio {row['haproxy_over_direct']}"
        )
    body = {
        "mode": f"lab, hey inside the lb node (HTTPS through HAProxy, plain HTTP direct), "
        f"{CONCURRENCY} connections for {DURATION} per measure, median of {ROUNDS} alternating rounds, "
        f"{len(workers)} workers; direct = every worker at once, concurrency split between them",
        "api_mode": f"bench/apiload.py (Python, httpx) inside the lb node, {API_CONCURRENCY} threads with a "
        f"connection each for {API_SECONDS} s per measure (flows begun by then finish), at most "
        f"{API_MAX_REQUESTS} getotp addresses or {FLOWS_MAX} flows, median of {ROUNDS} alternating rounds; "
        "getotp authenticated, one distinct eligible e-mail per request; a flow is eligible list, getotp, "
        "the mail read from the mail sink, authen, register",
        "load_average_at_start": load_at_start,
        "results": results,
    }
    write_report("throughput", body)
    plot(results)
    return body


def _api(mode: str, path: str, haproxy: str, direct: list[str], credentials: dict[str, str]) -> dict[str, Any]:
    if path == "haproxy":
        return measure_api(mode, [f"{haproxy}/api"], [f"{haproxy}/mail"], credentials)
    return measure_api(mode, [f"{d}:8001/api" for d in direct], [f"{d}:8025" for d in direct], credentials)


# The plot's panels: each path's figure on a scale of its own (the UI answers many times the API's rate).
PANELS = (
    ("ui", "rps", "GET / (req/s)"),
    ("api_getotp", "rps", "getotp (req/s)"),
    ("api_flows", "flows_per_s", "registrations/s"),
)


def plot(results: dict[str, dict[str, Any]]) -> None:
    """Each path through HAProxy and direct, side by side."""
    figure, axes = plt.subplots(1, len(PANELS), figsize=(9, 3.6))
    for axis, (name, key, label) in zip(axes, PANELS, strict=True):
        row = results[name]
        axis.bar([0, 1], [row["haproxy"][key], row["direct_all_workers"][key]], color=["tab:blue", "tab:orange"])
        axis.set_xticks([0, 1], ["HAProxy", "direct"])
        axis.set_title(f"{name}\n(ratio {row['haproxy_over_direct']})", fontsize=9)
        axis.set_ylabel(label)
    figure.suptitle("throughput, same load, through HAProxy and direct to the workers")
    figure.tight_layout()
    figure.savefig(OUT / "throughput.png", dpi=110)
    plt.close(figure)
