"""What the benchmarks share: running `fab` on a lab of their own, timing it, writing JSON and plots.

Figures are measurements, never pass/fail: every run records the machine and the mode it ran in.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench"
# The page the figures are published on: make bench and make chaos rewrite their blocks of it.
NUMBERS_PAGE = ROOT / "docs" / "numbers.md"
FAB = str(Path(sys.executable).parent / "fab")
# A lab of the benchmarks' own, so they never touch the demo lab or the test lab.
ENV = {
    "SWARMLAB_CLUSTER": "bench",
    "SWARMLAB_CIDR": "10.32.0.0/24",
    "SWARMLAB_OVERLAY_POOL": "10.132.0.0/16",
    "SWARMLAB_HTTP_PORT": "38080",
    "SWARMLAB_HTTPS_PORT": "38443",
    "SWARMLAB_SSH_PORT": "32222",
    "SWARMLAB_STATS_PORT": "38404",
}


def fab(*args: str, env: dict[str, str] | None = None, timeout: float = 1800) -> tuple[float, str]:
    """Run `fab ARGS` on the bench lab; return its wall time and output. A failure stops the bench."""
    started = time.monotonic()
    done = subprocess.run(
        [FAB, *args],
        cwd=ROOT,
        env={**os.environ, **ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(
            f"fab {' '.join(args)} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        )
    return round(seconds, 1), done.stdout


def make(target: str) -> tuple[float, str]:
    """`make TARGET` with the bench lab's environment (make demo, make down)."""
    started = time.monotonic()
    done = subprocess.run(
        ["make", target], cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, check=False, timeout=1800
    )
    if done.returncode != 0:
        raise SystemExit(f"make {target} failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    return round(time.monotonic() - started, 1), done.stdout


def machine() -> dict[str, Any]:
    memory = next(
        (
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "cpus": os.cpu_count(),
        "memory_mib": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        # The machine is shared: what else ran beside the figures (1, 5 and 15 minute averages).
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_report(name: str, body: dict[str, Any]) -> Path:
    report = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **body}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def replace_block(page: Path, start: str, end: str, body: str) -> bool:
    """Put `body` between the `start` and `end` markers of `page`, leaving the rest as written.

    False, and the page untouched, when the page lacks either marker."""
    text = page.read_text()
    if start not in text or end not in text:
        return False
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    page.write_text(f"{head}{start}\n{body}\n{end}{tail}")
    return True
