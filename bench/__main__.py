"""`make bench`: figures to docs/bench/*.json and plots, then the benchmark block of docs/numbers.md.

`python -m bench [timings|throughput|cis|scale|readme]...` runs some; no argument runs them all, in an
order that reuses the lab: the phase timings end with the stack deployed, throughput measures it, the
CIS Docker Benchmark reads it (bench/cis.py), then the big labs come and go one at a time. Nothing here
passes or fails on time.
"""

from __future__ import annotations

import sys

from bench import cis, readme, scale, throughput, timings
from bench.common import fab

PARTS = {"timings": timings.run, "throughput": throughput.run, "cis": cis.run, "scale": scale.run}


def main(argv: list[str]) -> None:
    chosen = argv or [*PARTS, "readme"]
    try:
        for name in chosen:
            if name in PARTS:
                PARTS[name]()
    finally:
        if any(name in PARTS for name in chosen):
            fab("lab-down")
    if "readme" in chosen:
        readme.update()


if __name__ == "__main__":
    main(sys.argv[1:])
