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
        lines += [
            f"Throughput ({throughput['mode']}):",
            "",
            "| path | through HAProxy | p50 / p99 | direct to the workers | p50 / p99 | HAProxy / direct |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in throughput["results"].items():
            h, d = r["haproxy"], r["direct_all_workers"]
            lines.append(
                f"| {name} | {h['rps']} req/s | {h['p50_ms']} / {h['p99_ms']} ms | {d['rps']} req/s | "
                f"{d['p50_ms']} / {d['p99_ms']} ms | {r['haproxy_over_direct']} |"
            )
        lines += ["", f"![throughput]({plots}/throughput.png)", ""]
    return "\n".join(lines)


def update(page: Path = NUMBERS_PAGE) -> None:
    plots = Path(os.path.relpath(OUT, page.parent)).as_posix()
    if not replace_block(page, START, END, section(plots)):
        raise SystemExit(f"{page} has no {START} ... {END} section to regenerate")
    print(f"{page}: benchmark block regenerated from docs/bench/*.json")
