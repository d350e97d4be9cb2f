"""The cluster map on the managers, pure: which manager runs the wanted map container, how to (re)start
it, and the HAProxy route to it.

Why a plain container and not a swarm service: the managers are drained, and Drain refuses every
task whatever its placement constraints; reading the swarm needs a manager's Docker API, which no
worker has and which must never be published on the network. So each manager runs the map itself
(`--restart unless-stopped`), reading its own engine's socket, served on its private address only,
and HAProxy balances /map/ over the managers (any one answers for the whole swarm; losing some
managers keeps the map up). The socket is full control of the engine even read-only: the container
runs unprivileged in the socket's group, with no capability, a read-only root and bounded memory,
and the program sends only fixed GET requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import haproxy.model as haproxy
from cluster.facts.daemons import MAP_CONTAINER, MapFacts
from cluster.operations import Operation, Parallel, Plan, Run, Wait
from cluster.waiting import Verdict
from cluster.workload import REPO_ROOT, ImageSpec, Manifest, Workload

MAP_PATH = "/map/"
MAP_NAME = "clustermap"
CONTAINER_PORT = 8080
MAP_ANSWER_TIMEOUT = 90  # the cluster map container answers on a manager


# The engine's own image, built like a bundle's (input-hash tag, the cluster registry, the base image).
MAP_IMAGES = Manifest(
    name="swarmlab",
    description="the cluster's own images",
    images=(
        ImageSpec(
            name="clustermap",
            dockerfile="services/clustermap/Dockerfile",
            sources={"services/clustermap/mapserver.py": "mapserver.py"},
        ),
    ),
)


def map_images(environment: str) -> Workload:
    """The map's image as a workload of its own, for build-images."""
    return Workload(MAP_IMAGES, REPO_ROOT, environment, None)


def run_command(image: str, node: str, address: str, port: int) -> str:
    # --hostname: the page says which manager answered.
    return (
        f"docker rm -f {MAP_CONTAINER} >/dev/null 2>&1; "
        f"docker run -d --name {MAP_CONTAINER} --hostname {node} --restart unless-stopped --read-only --cap-drop ALL "
        "--security-opt no-new-privileges --memory 64m --pids-limit 64 "
        '--group-add "$(stat -c %g /var/run/docker.sock)" -v /var/run/docker.sock:/var/run/docker.sock:ro '
        f"-p {address}:{port}:{CONTAINER_PORT} {image} >/dev/null"
    )


def _answers(output: str) -> Verdict:
    return Verdict.ready() if output.strip() == "ready" else Verdict.waiting("the map does not answer yet")


def plan_map(managers: Sequence[tuple[str, str]], facts: Mapping[str, MapFacts], image: str, port: int) -> Plan:
    """(Re)start the map where it is missing, stopped or runs another image; wait until each answers."""
    stale = [(name, ip) for name, ip in managers if facts[name].image != image or not facts[name].running]
    if not stale:
        return Plan(notes=(f"every manager runs the map ({image})",))
    runs = tuple(Run(name, run_command(image, name, ip, port), f"the cluster map runs on {name}") for name, ip in stale)
    operations: list[Operation] = [runs[0] if len(runs) == 1 else Parallel(runs, "start the map on the managers")]
    probe = "curl -sf -o /dev/null http://{ip}:{port}/healthz && echo ready || echo no"
    operations += [
        Wait(name, probe.format(ip=ip, port=port), _answers, f"the map answers on {name}", MAP_ANSWER_TIMEOUT)
        for name, ip in stale
    ]
    return Plan(tuple(operations))


def plan_remove(managers: Sequence[str], facts: Mapping[str, MapFacts]) -> Plan:
    return Plan(
        tuple(
            Run(name, f"docker rm -f {MAP_CONTAINER} >/dev/null", f"the cluster map removed from {name}")
            for name in managers
            if facts[name].image
        )
    )


def map_route(managers: Sequence[tuple[str, str]], port: int) -> haproxy.Route:
    """/map/ on the managers, admin credential only."""
    return haproxy.Route(MAP_NAME, MAP_PATH, port, "/healthz", strip_prefix=True, admin=True, servers=tuple(managers))
