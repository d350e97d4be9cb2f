"""The CIS Docker Benchmark on the lab: docker/docker-bench-security run on a worker (the daemon, its
files and the stack's containers: sections 1 to 6) and on a manager (the swarm: section 7), its
PASS/WARN/INFO/NOTE counts and every WARN by id to docs/bench/cis.json.

docker-bench-security is not ours and never committed: give a checkout of it in
DOCKER_BENCH_SECURITY (`git clone https://github.com/docker/docker-bench-security`), or the step
clones it itself. The lab is the benchmarks' own (bench.common.ENV), deployed; SWARMLAB_CLUSTER
names another one (`python -m bench.cis` on a lab of your own).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import docker

from bench.common import ENV, write_report

UPSTREAM = "https://github.com/docker/docker-bench-security"
# Which node answers which sections: a worker runs the stack's containers, only a manager sees the swarm.
SECTIONS = {"worker-1": ("1", "2", "3", "4", "5", "6"), "manager-1": ("7",)}
RUN_TIMEOUT = 900


def summarize(report: dict[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    """Counts per result and the WARNed checks (id and description) of the chosen sections of a
    docker-bench-security JSON log."""
    chosen = [s for s in report["tests"] if str(s["id"]) in sections]
    counts: Counter[str] = Counter(r["result"] for s in chosen for r in s["results"])
    return {
        "sections": {str(s["id"]): s["desc"] for s in chosen},
        "counts": {k: counts[k] for k in ("PASS", "WARN", "INFO", "NOTE")},
        "warn": [{"id": r["id"], "desc": r["desc"]} for s in chosen for r in s["results"] if r["result"] == "WARN"],
    }


def checkout() -> tuple[Path, str]:
    """A docker-bench-security checkout and its commit."""
    given = os.environ.get("DOCKER_BENCH_SECURITY")
    if given:
        path = Path(given)
    else:
        path = Path(tempfile.mkdtemp(prefix="docker-bench-security-"))
        cloned = subprocess.run(["git", "clone", "-q", "--depth", "1", UPSTREAM, str(path)], check=False)
        if cloned.returncode != 0:
            raise SystemExit(f"cis: could not clone {UPSTREAM}; give a checkout of it in DOCKER_BENCH_SECURITY")
    if not (path / "docker-bench-security.sh").is_file():
        raise SystemExit(f"cis: DOCKER_BENCH_SECURITY={path} holds no docker-bench-security.sh")
    commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return path, commit.stdout.strip() or "unknown"


def scan(cluster: str, node: str, script: Path) -> dict[str, Any]:
    """docker-bench-security run inside one lab node (its own engine), its JSON log back."""
    container = docker.from_env().containers.get(f"swarmlab-{cluster}-{node}")
    # `docker cp` into a directory left by an interrupted run would copy the checkout inside it.
    container.exec_run(["rm", "-rf", "/opt/docker-bench-security"])
    subprocess.run(["docker", "cp", str(script), f"{container.name}:/opt/docker-bench-security"], check=True)
    run = (
        "cd /opt/docker-bench-security && rm -f /tmp/dbs.log* && "
        f"timeout {RUN_TIMEOUT} bash docker-bench-security.sh -b -l /tmp/dbs.log >/dev/null 2>&1; "
        "cat /tmp/dbs.log.json; rm -rf /opt/docker-bench-security /tmp/dbs.log*"
    )
    output = container.exec_run(["sh", "-c", run]).output
    assert isinstance(output, bytes)  # not streamed
    return dict(json.loads(output))


def run() -> dict[str, Any]:
    cluster = os.environ.get("SWARMLAB_CLUSTER", ENV["SWARMLAB_CLUSTER"])
    script, commit = checkout()
    results = {node: summarize(scan(cluster, node, script), sections) for node, sections in SECTIONS.items()}
    for node, found in results.items():
        print(f"cis on {node} (sections {', '.join(found['sections'])}): {found['counts']}")
    body = {"tool": UPSTREAM, "commit": commit, "cluster": cluster, "nodes": results}
    write_report("cis", body)
    return body


if __name__ == "__main__":
    run()
