"""A stack's overlay networks, joined by every worker one network at a time before its services start.

Why: a worker that starts several tasks at once joins their overlay networks at once, and Docker's
networkdb then loses all but one of its concurrent bulk syncs to the same peer; each one lost stalls
that worker's tasks for 30 s ("Bulk sync to node ... timed out", moby/moby#47396; fixed upstream by
moby/moby#52862, which the Docker 20.10 of Debian 12 does not have). In the lab it struck 1 to 4 times
in every deploy of the registration stack onto workers that had not joined its networks that we timed. One idle task per worker attached to every
network of the stack (a global service, deployed and waited for first) joins them one after the
other, as a container attaches its networks in turn; the services find them joined. The task stays,
so tasks started later on a worker (a scale, a drain elsewhere, a recovery) find them joined too.

Pure: the parsed stack in, the anchor's stack file and how to wait for it out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from cluster.facts.services import Service, stack_replicas
from cluster.waiting import Verdict

ANCHOR_SERVICE = "network-anchor"
ANCHOR_TIMEOUT = 180  # includes the first pull of its image on every worker (the stack needs it anyway)


def anchor_stack(document: Mapping[str, Any]) -> str | None:
    """The anchor's stack file, to deploy under the stack's name: the stack's networks as rendered,
    and a global service on the workers attached to all of them, running `sleep` in the image most of
    the stack's services run (so its pull is one the services need anyway). None for a stack with
    fewer than two networks of its own: one network is never joined twice at once."""
    networks: dict[str, Any] = document.get("networks") or {}
    services: dict[str, dict[str, Any]] = document.get("services") or {}
    images = Counter(str(s["image"]) for s in services.values() if s.get("image"))
    if len(networks) < 2 or not images:
        return None
    anchor = {
        "image": images.most_common(1)[0][0],
        "command": ["sleep", "infinity"],
        "networks": sorted(networks),
        "user": "65534:65534",
        "read_only": True,
        "cap_drop": ["ALL"],
        # A check that only asks the container to run a process (`sleep` has nothing else to show), so
        # that no task of the cluster runs unchecked (CIS 5.26). Swarm counts the task as running once
        # it is healthy: the interval is what it adds to the anchor's start.
        "healthcheck": {"test": ["CMD", "true"], "interval": "5s", "timeout": "3s", "retries": 3},
        "stop_signal": "SIGKILL",  # sleep ignores SIGTERM as PID 1, and has nothing to finish
        "deploy": {
            "mode": "global",
            "endpoint_mode": "dnsrr",  # nothing connects to it: no virtual IP, no load-balancer sandbox
            "placement": {"constraints": ["node.role == worker"]},
            "resources": {"limits": {"cpus": "0.05", "memory": "16M", "pids": 8}},
        },
    }
    body = {"version": document.get("version", "3.9"), "services": {ANCHOR_SERVICE: anchor}, "networks": networks}
    return yaml.safe_dump(body, sort_keys=False)


def anchor_verdict(stack: str) -> Callable[[str], Verdict]:
    name = f"{stack}_{ANCHOR_SERVICE}"

    def verdict(output: str) -> Verdict:
        anchor = next((s for s in stack_replicas(stack).parse(output) if s.name == name), Service(name))
        if anchor.all_running:
            return Verdict.ready(f"{name} runs on every worker ({anchor.replica_status})")
        return Verdict.waiting(f"{name} {anchor.replica_status or 'not created yet'}")

    return verdict
