"""Wall times of the lab's phases through the real `fab` command line: lab-up with images cached,
bootstrap, deploy-stack from an empty registry, the no-change reruns, and `make demo` after
`make down` (the image cache kept). Leaves the bench lab up with the stack deployed."""

from __future__ import annotations

import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import OUT, fab, make, write_report

PHASE_ROW = re.compile(r"^(?P<phase>[a-z0-9-]+)\s+(?P<seconds>\d+\.\d)\s+(?P<result>changed|no change|FAILED)$", re.M)


def phases(output: str) -> dict[str, float]:
    """The timing table a fab run ends with, as phase -> seconds."""
    return {m["phase"]: float(m["seconds"]) for m in PHASE_ROW.finditer(output)}


def run() -> dict[str, Any]:
    fab("lab-down", "--purge")
    fab("lab-up")  # builds the lab images if they are not cached yet; not measured
    fab("lab-down")
    steps: list[dict[str, Any]] = []

    def step(label: str, seconds: float, output: str) -> None:
        steps.append(
            {"step": label, "seconds": seconds, "no_change": "result: no change" in output, "phases": phases(output)}
        )
        print(f"{label:<48} {seconds:6.1f} s")

    step("lab-up (lab images cached)", *fab("lab-up"))
    step("bootstrap", *fab("bootstrap"))
    step("bootstrap again (no change)", *fab("bootstrap"))
    step("deploy-stack from an empty registry", *fab("deploy-stack"))
    step("deploy-stack again (no change)", *fab("deploy-stack"))
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
