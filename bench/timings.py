"""Wall times of the lab's phases through the real `fab` command line: lab-up with the lab images
cached, bootstrap, deploy-stack from nothing (no image in the registry nor in the machine's image
cache: every image built), the no-change reruns, the cluster map, `make demo` after `make down` (the
lab's image cache kept), and deploy-stack from an empty cluster registry on a warm machine (a new lab:
`lab-down --purge` took the lab's own cache; the machine's image cache fills the registry). Leaves
the bench lab up with the stack deployed."""

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


NOTHING = "deploy-stack from nothing (every image built)"
EMPTY_REGISTRY = "deploy-stack from an empty registry (machine image cache warm)"
DEMO = "make demo after make down"


def run() -> dict[str, Any]:
    _, purged = fab("lab-down", "--purge", "--machine-cache")
    if "kept the machine's image cache" in purged:
        raise SystemExit(f"make bench measures a deploy from nothing, but another lab uses the image cache:\n{purged}")
    fab("lab-up")  # builds the lab images if they are not cached yet; not measured
    fab("lab-down")
    steps: list[dict[str, Any]] = []

    def step(label: str, seconds: float, output: str) -> None:
        so_far = bulk_sync_stalls()  # since this lab's node containers started
        before = steps[-1]["bulk_sync_stalls_so_far"] if steps else 0
        steps.append(
            {
                "step": label,
                "seconds": seconds,
                "no_change": "result: no change" in output,
                "phases": phases(output),
                "bulk_sync_stalls_so_far": so_far,
                # A count lower than the last step's belongs to a new lab's containers.
                "bulk_sync_stalls": so_far - before if so_far >= before else so_far,
            }
        )
        print(f"{label:<64} {seconds:6.1f} s")

    step("lab-up (lab images cached)", *fab("lab-up"))
    step("bootstrap", *fab("bootstrap"))
    step("bootstrap again (no change)", *fab("bootstrap"))
    step(NOTHING, *fab("deploy-stack"))
    step("deploy-stack again (no change)", *fab("deploy-stack"))
    # make demo also runs the cluster map: its image is built and pulled here once, as the demo
    # before a `make down` would have, so the next step measures a demo with everything cached.
    step("cluster-map (first time: builds its image)", *fab("cluster-map"))
    step("make down (the image cache stays)", *make("down"))
    step(DEMO, *make("demo"))
    step("lab-down --purge (the lab's own image cache too)", *fab("lab-down", "--purge"))
    step("lab-up (a new lab)", *fab("lab-up"))
    step("bootstrap (a new lab)", *fab("bootstrap"))
    step(EMPTY_REGISTRY, *fab("deploy-stack"))
    by_step = {s["step"]: s["seconds"] for s in steps}
    body = {
        "mode": "lab, storage mode shared-dir (no kernel NFS client on this machine)",
        "steps": steps,
        "lab_up_plus_bootstrap_seconds": round(by_step["lab-up (lab images cached)"] + by_step["bootstrap"], 1),
        "deploy_from_nothing_seconds": by_step[NOTHING],
        "deploy_from_empty_registry_seconds": by_step[EMPTY_REGISTRY],
        "demo_after_down_seconds": by_step[DEMO],
    }
    write_report("lab-timings", body)
    figure, axis = plt.subplots(figsize=(9, 4.4))
    labels = [s["step"] for s in steps][::-1]
    axis.barh(labels, [s["seconds"] for s in steps][::-1], color="#3b6ea5")
    axis.set_xlabel("seconds (wall time)")
    axis.set_title("swarmlab lab phases (make bench)")
    figure.tight_layout()
    figure.savefig(OUT / "lab-timings.png", dpi=110)
    plt.close(figure)
    return body
