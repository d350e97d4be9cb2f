"""`make bench`: wall times of the lab's phases, through the real `fab` command line, on a lab of its
own. Figures go to docs/bench/lab-timings.json and a plot next to it; nothing here passes or fails
on time.

Measured: lab-up with images cached, bootstrap, a second (no-change) bootstrap, deploy-stack from an
empty registry (nothing to a healthy stack), and a second (no-change) deploy-stack.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench"
FAB = str(Path(sys.executable).parent / "fab")
ENV = {
    "SWARMLAB_CLUSTER": "bench",
    "SWARMLAB_CIDR": "10.32.0.0/24",
    "SWARMLAB_OVERLAY_POOL": "10.132.0.0/16",
    "SWARMLAB_HTTP_PORT": "38080",
    "SWARMLAB_SSH_PORT": "32222",
    "SWARMLAB_STATS_PORT": "38404",
}
STEPS = (
    ("lab-up (images cached)", "lab-up"),
    ("bootstrap", "bootstrap"),
    ("bootstrap again (no change)", "bootstrap"),
    ("deploy-stack (empty registry)", "deploy-stack"),
    ("deploy-stack again (no change)", "deploy-stack"),
)


def fab(task: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([FAB, task], cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"fab {task} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    fab("lab-down")
    fab("lab-up")  # builds the images if they are not cached yet; not measured
    fab("lab-down")
    results: list[dict[str, str | float | bool]] = []
    seconds_of: list[float] = []
    try:
        for label, task in STEPS:
            seconds, out = fab(task)
            seconds_of.append(round(seconds, 1))
            results.append(
                {"step": label, "task": task, "seconds": round(seconds, 1), "no_change": "result: no change" in out}
            )
            print(f"{label:<34} {seconds:6.1f} s")
    finally:
        fab("lab-down")
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "mode": "lab, storage mode as printed by deploy-stack (shared-dir where the kernel has no NFS client)",
        "steps": results,
        "lab_up_plus_bootstrap_seconds": round(seconds_of[0] + seconds_of[1], 1),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lab-timings.json").write_text(json.dumps(report, indent=2) + "\n")
    figure, axis = plt.subplots(figsize=(8, 3.2))
    axis.barh([label for label, _ in STEPS][::-1], seconds_of[::-1], color="#3b6ea5")
    axis.set_xlabel("seconds (wall time)")
    axis.set_title(f"swarmlab lab phases, {os.cpu_count()} cores")
    figure.tight_layout()
    figure.savefig(OUT / "lab-timings.png", dpi=110)
    print(f"wrote {OUT / 'lab-timings.json'} and lab-timings.png")


if __name__ == "__main__":
    main()
