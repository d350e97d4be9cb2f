"""The benchmark block of docs/numbers.md, regenerated from docs/bench/*.json (between two markers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.common import NUMBERS_PAGE, OUT, replace_block

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _stalls(steps: list[dict[str, Any]]) -> list[str]:
    """The 30 s networkdb stalls (moby/moby#47396) the timings include, counted from the workers' logs."""
    counted = [s for s in steps if s.get("bulk_sync_stalls")]
    where = ", ".join(f"{s['bulk_sync_stalls']} in {s['step']}" for s in counted) or "none in any step"
    return [
        "Docker's networkdb stall (`Bulk sync to node ... timed out` in a worker's log: a 30 s wait before "
        "it starts its tasks, [moby/moby#47396](https://github.com/moby/moby/issues/47396)), which the "
        f"deploy's network anchor avoids: {where}.",
        "",
    ]


def _load(name: str) -> dict[str, Any] | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def section(plots: str = "bench") -> str:
    """The block's Markdown; `plots` is docs/bench/ as a link from the page (docs/numbers.md: `bench`)."""
    lines: list[str] = []
    timings, scale, throughput = _load("lab-timings"), _load("scale"), _load("throughput")
    if timings:
        m = timings["machine"]
        lines += [
            f"Measured by `make bench` on {timings['measured_at'][:10]}: {m['cpus']} cores, {m['memory_mib']} MiB, "
            f"{timings['mode']}.",
            "",
            "| step | wall time |",
            "| --- | --- |",
            *(f"| {s['step']} | {s['seconds']} s |" for s in timings["steps"]),
            f"| **lab-up + bootstrap** | **{timings['lab_up_plus_bootstrap_seconds']} s** |",
            "",
            *_stalls(timings["steps"]),
            f"![lab phases]({plots}/lab-timings.png)",
            "",
        ]
    if scale:
        lines += [
            "| lab | lab-up | bootstrap | total | idle worker | idle manager | whole lab |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *(
                f"| {r['managers']} managers, {r['workers']} workers | {r['lab_up_seconds']} s | {r['bootstrap_seconds']} s | "
                f"{r['total_seconds']} s | {r['idle_worker_mib']} MiB | {r['idle_manager_mib']} MiB | {r['lab_mib']} MiB |"
                for r in scale["shapes"]
            ),
            "",
            f"Each figure is the median of {scale.get('rounds', 1)} round(s). "
            f"20 workers take {scale['twenty_over_three']}x the time of 3 (goal: at most 2x). By memory, this machine "
            f"holds a lab of about {scale['largest_lab_estimate_nodes']} idle nodes ({scale['estimate_basis']}); "
            "that counts memory only, not the CPU a deployed stack needs on 2 cores.",
            "",
            f"![bootstrap time against workers]({plots}/scale.png)",
            "",
        ]
    if throughput:
        lines += _throughput(throughput, plots)
    return "\n".join(lines)


def update(page: Path = NUMBERS_PAGE) -> None:
    plots = Path(os.path.relpath(OUT, page.parent)).as_posix()
    if not replace_block(page, START, END, section(plots)):
        raise SystemExit(f"{page} has no {START} ... {END} section to regenerate")
    print(f"{page}: benchmark block regenerated from docs/bench/*.json")


# How each path's figure reads: its key in the JSON and its unit.
UNITS = {"ui": ("rps", "req/s"), "api_getotp": ("rps", "req/s"), "api_flows": ("flows_per_s", "flows/s")}


def _statuses(counted: dict[str, int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in counted.items()) or "none"


def _throughput(throughput: dict[str, Any], plots: str) -> list[str]:
    """The throughput table (one row per path, both modes) and how the API's requests were answered."""
    m = throughput["machine"]
    load = m.get("load_average")
    when = f", measured {throughput['measured_at'][:16].replace('T', ' ')} UTC" if "measured_at" in throughput else ""
    lines = [
        f"Throughput{when} ({throughput['mode']}).",
        "",
        *([f"The API's load: {throughput['api_mode']}.", ""] if "api_mode" in throughput else []),
        *(
            [f"Load average (1, 5, 15 min) at the start {throughput['load_average_at_start']}, at the end {load}.", ""]
            if load and "load_average_at_start" in throughput
            else []
        ),
        "| path | through HAProxy | p50 / p99 | direct to the workers | p50 / p99 | HAProxy / direct |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    results: dict[str, dict[str, Any]] = throughput["results"]
    for name, r in results.items():
        key, unit = UNITS.get(name, ("rps", "req/s"))
        h, d = r["haproxy"], r["direct_all_workers"]
        lines.append(
            f"| {name} | {h[key]} {unit} | {h['p50_ms']} / {h['p99_ms']} ms | {d[key]} {unit} | "
            f"{d['p50_ms']} / {d['p99_ms']} ms | {r['haproxy_over_direct']} |"
        )
    steps = [(name, step, r) for name, r in results.items() for step in r["haproxy"].get("steps", {})]
    if "api_getotp" in results or steps:
        lines += [
            "",
            "How the API's requests were answered (the median round; status and reply, p50 / p99):",
            "",
            "| path | request | through HAProxy | direct to the workers |",
            "| --- | --- | --- | --- |",
        ]
        if "api_getotp" in results:
            h, d = results["api_getotp"]["haproxy"], results["api_getotp"]["direct_all_workers"]
            lines.append(f"| api_getotp | getotp | {_statuses(h['statuses'])} | {_statuses(d['statuses'])} |")
        for name, step, r in steps:
            h, d = r["haproxy"]["steps"][step], r["direct_all_workers"]["steps"][step]
            lines.append(
                f"| {name} | {step} | {_statuses(h['statuses'])} ({h['p50_ms']} / {h['p99_ms']} ms) | "
                f"{_statuses(d['statuses'])} ({d['p50_ms']} / {d['p99_ms']} ms) |"
            )
    return [*lines, "", f"![throughput]({plots}/throughput.png)", ""]
