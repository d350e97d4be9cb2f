"""Wall times of the lab's phases through the real `fab` command line: lab-up with images cached,
bootstrap, deploy-stack from an empty registry (nothing built, nothing pulled: `lab-down --purge`
first), the no-change reruns, the cluster map, and `make demo` after `make down` (the image cache
kept). Leaves the bench lab up with the stack deployed."""

from __future__ import annotations

import re
from typing import Any

import docker
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import ENV, OUT, fab, make, write_report

PHASE_ROW = re.compile(r"^(?P<phase>[a-z0-9-]+)\s+(?P<seconds>\d+\.\d)\s+(?P<result>changed|no change|FAILED)$", re.M)


def phases(output: str) -> dict[str, float]:
    """The timing table a fab run ends with, as phase -> seconds."""
    return {m["phase"]: float(m["seconds"]) for m in PHASE_ROW.finditer(output)}


def bulk_sync_stalls() -> int:
    """How often the lab's workers logged Docker's networkdb "Bulk sync to node ... timed out": each
    is a 30 s stall before a worker starts its tasks (moby/moby#47396), which a timing includes."""
    engine = docker.from_env()
    workers = engine.containers.list(
        filters={"label": [f"swarmlab.cluster={ENV['SWARMLAB_CLUSTER']}", "swarmlab.role=worker"]}
    )
    logs = [w.exec_run(["cat", "/var/log/dockerd.log"]).output for w in workers]
    return sum(len(re.findall(rb"Bulk sync to node \S+ timed out", log)) for log in logs if isinstance(log, bytes))


def run() -> dict[str, Any]:
    fab("lab-down", "--purge")
    fab("lab-up")  # builds the lab images if they are not cached yet; not measured
    fab("lab-down")
    steps: list[dict[str, Any]] = []

    def step(label: str, seconds: float, output: str) -> None:
        steps.append(
            {
                "step": label,
                "seconds": seconds,
                "no_change": "result: no change" in output,
                "phases": phases(output),
                "bulk_sync_stalls_so_far": bulk_sync_stalls(),  # since this lab's node containers started
            }
        )
        print(f"{label:<48} {seconds:6.1f} s")

    step("lab-up (lab images cached)", *fab("lab-up"))
    step("bootstrap", *fab("bootstrap"))
    step("bootstrap again (no change)", *fab("bootstrap"))
    step("deploy-stack from an empty registry", *fab("deploy-stack"))
    step("deploy-stack again (no change)", *fab("deploy-stack"))
    # make demo also runs the cluster map: its image is built and pulled here once, as the demo
    # before a `make down` would have, so the next step measures a demo with everything cached.
    step("cluster-map (first time: builds its image)", *fab("cluster-map"))
    step("make down (the image cache stays)", *make("down"))
    step("make demo after make down", *make("demo"))
    by_step = {s["step"]: s["seconds"] for s in steps}
    body = {
        "mode": "lab, storage mode shared-dir (no kernel NFS client on this machine)",
        "steps": steps,
        "lab_up_plus_bootstrap_seconds": round(by_step["lab-up (lab images cached)"] + by_step["bootstrap"], 1),
        "deploy_from_empty_registry_seconds": by_step["deploy-stack from an empty registry"],
        "demo_after_down_seconds": by_step["make demo after make down"],
    }
    write_report("lab-timings", body)
    figure, axis = plt.subplots(figsize=(8, 3.6))
    labels = [s["step"] for s in steps][::-1]
    axis.barh(labels, [s["seconds"] for s in steps][::-1], color="#3b6ea5")
    axis.set_xlabel("seconds (wall time)")
    axis.set_title("swarmlab lab phases (make bench)")
    figure.tight_layout()
    figure.savefig(OUT / "lab-timings.png", dpi=110)
    plt.close(figure)
    return body
