"""Big labs: lab-up + bootstrap for 3, 10 and 20 workers (and 20 workers with 5 managers), and the
memory an idle node takes, read from the local engine. Each lab is removed after its measure. Each
shape is measured in ROUNDS rounds, the shapes in turn in each round, and each figure is the median
of its rounds (the rounds of a 3-worker lab varied from 9.9 to 13.2 s in one bench run)."""

from __future__ import annotations

import statistics
from typing import Any

import docker
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import ENV, OUT, fab, machine, write_report

SHAPES = ((3, 3), (3, 10), (3, 20), (5, 20))  # (managers, workers)
ROUNDS = 3
MIB = 2**20


def memory_of_nodes(cluster: str) -> dict[str, float]:
    """Memory (MiB) each node container of a lab uses right now (docker stats, one sample)."""
    engine = docker.from_env()
    found: dict[str, float] = {}
    for container in engine.containers.list(filters={"label": f"swarmlab.cluster={cluster}"}):
        stats: dict[str, Any] = container.stats(stream=False)  # type: ignore[assignment]
        usage = stats["memory_stats"].get("usage", 0) - stats["memory_stats"].get("stats", {}).get("inactive_file", 0)
        found[container.labels["swarmlab.node"]] = round(usage / MIB, 1)
    return found


def measure(managers: int, workers: int) -> dict[str, Any]:
    shape = {"SWARMLAB_MANAGERS": str(managers), "SWARMLAB_WORKERS": str(workers)}
    try:
        up, _ = fab("lab-up", env=shape)
        boot, _ = fab("bootstrap", env=shape)
        memory = memory_of_nodes(ENV["SWARMLAB_CLUSTER"])
    finally:
        fab("lab-down", env=shape)
    print(f"{managers} managers, {workers:>2} workers: lab-up {up:5.1f} s + bootstrap {boot:5.1f} s")
    return {"up": up, "boot": boot, "memory": memory}


def run() -> dict[str, Any]:
    fab("lab-down")
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {shape: [] for shape in SHAPES}
    for _ in range(ROUNDS):
        for managers, workers in SHAPES:
            runs[(managers, workers)].append(measure(managers, workers))
    results: list[dict[str, Any]] = []
    for (managers, workers), measured in runs.items():
        up = round(statistics.median(m["up"] for m in measured), 1)
        boot = round(statistics.median(m["boot"] for m in measured), 1)
        total = round(statistics.median(m["up"] + m["boot"] for m in measured), 1)
        memory = {
            node: round(statistics.median(m["memory"].get(node, 0.0) for m in measured), 1)
            for node in measured[0]["memory"]
        }
        results.append(
            {
                "managers": managers,
                "workers": workers,
                "lab_up_seconds": up,
                "bootstrap_seconds": boot,
                "total_seconds": total,
                "total_seconds_each_round": [round(m["up"] + m["boot"], 1) for m in measured],
                "idle_worker_mib": memory.get("worker-1", 0.0),
                "idle_manager_mib": memory.get("manager-1", 0.0),
                "lab_mib": round(sum(memory.values()), 1),
            }
        )
    three = next(r for r in results if (r["managers"], r["workers"]) == (3, 3))
    twenty = next(r for r in results if (r["managers"], r["workers"]) == (3, 20))
    per_node = max(r["idle_manager_mib"] for r in results)
    available = machine()["memory_mib"] * 0.8  # leave a fifth for the host and the stack's services
    body = {
        "mode": "lab: node containers with sshd and a Docker engine each, no services deployed",
        "rounds": ROUNDS,
        "shapes": results,
        "twenty_over_three": round(twenty["total_seconds"] / three["total_seconds"], 2),
        "largest_lab_estimate_nodes": int(available // per_node) if per_node else None,
        "estimate_basis": "80% of the machine's memory divided by the memory of the largest idle node measured",
    }
    write_report("scale", body)
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for managers in sorted({r["managers"] for r in results}):
        rows = [r for r in results if r["managers"] == managers]
        axis.plot([r["workers"] for r in rows], [r["total_seconds"] for r in rows], "o-", label=f"{managers} managers")
    axis.set_xlabel("workers")
    axis.set_ylabel("lab-up + bootstrap (s)")
    axis.set_ylim(bottom=0)
    axis.set_title("bootstrap time against lab size")
    axis.legend()
    figure.tight_layout()
    figure.savefig(OUT / "scale.png", dpi=110)
    plt.close(figure)
    return body
