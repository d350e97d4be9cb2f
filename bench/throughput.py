"""Throughput side by side, in one run: requests per second and p50/p99 latency for `/` (the UI) and
for the API's OTP path (`POST /api/getotp`, an address that is not eligible: the whole RPC path runs,
the answer is 200 "sent" as for any address, then 429 once its quota is spent, and no mail is sent), once through HAProxy and once straight at every worker at
the same time. The load tool (Debian's `hey`) runs inside the lb node, so both paths start at the
same place and all traffic stays inside the lab. Bounded: DURATION per measure, ROUNDS measures of each."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
import tarfile
from pathlib import Path
from typing import Any

import docker
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import ENV, OUT, write_report
from cluster.config import load_config

DURATION = "10s"
ROUNDS = 3
CONCURRENCY = 24
HEY = "/usr/local/bin/hey"
OTP_BODY = '{"email": "not-eligible@bench.invalid"}'


def _container() -> Any:
    return docker.from_env().containers.get(f"swarmlab-{ENV['SWARMLAB_CLUSTER']}-lb-1")


def install_hey() -> None:
    """Copy the host's hey (Debian's package) into the lb node: a bench tool, not part of the node image."""
    host_hey = shutil.which("hey")
    if host_hey is None:
        raise SystemExit("make bench needs Debian's hey on this machine: apt-get install hey")
    data = Path(host_hey).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(HEY.lstrip("/"))
        info.size, info.mode = len(data), 0o755
        archive.addfile(info, io.BytesIO(data))
    _container().put_archive("/", buffer.getvalue())


def _hey_command(url: str, concurrency: int, api_auth: str | None) -> str:
    extra = f" -m POST -T application/json -d '{OTP_BODY}' -a '{api_auth}'" if api_auth else ""
    return f"{HEY} -z {DURATION} -c {concurrency} -t 10 -o csv{extra} '{url}'"


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


def measure(urls: list[str], api_auth: str | None) -> dict[str, Any]:
    """hey against every url at once (concurrency split between them); the totals."""
    per = max(1, CONCURRENCY // len(urls))
    script = " & ".join(f"({_hey_command(u, per, api_auth)} > /tmp/hey-{i}.csv)" for i, u in enumerate(urls))
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


def median_round(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (its latencies with it)."""
    return sorted(measured, key=lambda r: float(r["rps"]))[len(measured) // 2]


def run() -> dict[str, Any]:
    config = load_config(environ={**ENV})
    state = config.state(provider="lab")
    inventory: dict[str, Any] = json.loads(state.inventory.read_text())
    credentials: dict[str, str] = json.loads(state.credentials.read_text())
    auth = f"api:{credentials['api_password']}"
    workers = [n["private_ip"] for n in inventory["nodes"] if n["role"] == "worker"]
    install_hey()
    paths: dict[str, tuple[str, int, str | None]] = {
        "ui": ("/", 8000, None),
        "api_otp": ("/api/getotp", 8001, auth),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (path, port, api_auth) in paths.items():
        # HAProxy's HTTPS frontend (plain HTTP only redirects); hey does not verify certificates.
        # ROUNDS alternating measures of each, the median kept: one 10 s measure of each path varied
        # by 20% on a quiet machine (health checks, scrapes and the engines share the 2 cores).
        rounds: dict[str, list[dict[str, Any]]] = {"haproxy": [], "direct": []}
        for _ in range(ROUNDS):
            rounds["haproxy"].append(measure([f"https://127.0.0.1:443{path}"], api_auth))
            rounds["direct"].append(measure([f"http://{w}:{port}{path}" for w in workers], api_auth))
        through, direct = median_round(rounds["haproxy"]), median_round(rounds["direct"])
        ratio = round(through["rps"] / direct["rps"], 2) if direct["rps"] else None
        results[name] = {
            "haproxy": through,
            "direct_all_workers": direct,
            "haproxy_over_direct": ratio,
            "rounds_rps": {mode: [r["rps"] for r in measured] for mode, measured in rounds.items()},
        }
        print(
            f"{name}: HAProxy {through['rps']} req/s (p99 {through['p99_ms']} ms), direct {direct['rps']} req/s; ratio {ratio}"
        )
    body = {
        "mode": f"lab, hey inside the lb node (HTTPS through HAProxy, plain HTTP direct), "
        f"{CONCURRENCY} connections for {DURATION} per measure, median of {ROUNDS} alternating rounds, "
        f"{len(workers)} workers; direct = every worker at once, concurrency split between them",
        "results": results,
    }
    write_report("throughput", body)
    figure, axis = plt.subplots(figsize=(6, 3.6))
    names = list(results)
    x = range(len(names))
    axis.bar([i - 0.2 for i in x], [results[n]["haproxy"]["rps"] for n in names], 0.4, label="through HAProxy")
    axis.bar(
        [i + 0.2 for i in x], [results[n]["direct_all_workers"]["rps"] for n in names], 0.4, label="direct to workers"
    )
    axis.set_xticks(list(x), names)
    axis.set_ylabel("requests per second")
    axis.set_title("throughput, same load, with and without HAProxy")
    axis.legend()
    figure.tight_layout()
    figure.savefig(OUT / "throughput.png", dpi=110)
    plt.close(figure)
    return body
