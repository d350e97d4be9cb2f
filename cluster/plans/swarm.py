"""Swarm membership, pure: facts read from the engines in, the operations that bring the swarm to the
wanted state out (init on the first manager, joins, role fixes, drained managers).

An empty plan means the cluster is already as wanted, which is how the tasks report "no change".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum

from cluster.errors import SwarmlabError
from cluster.facts.swarm import NODE_LIST, SwarmInfo, SwarmNode, parse_live_tasks, running_on
from cluster.inventory import Node, Role
from cluster.operations import Parallel, Plan, Run, Wait
from cluster.waiting import Verdict
from topology import SWARM_PORT

NODES_READY_TIMEOUT = 120  # every node the swarm lists is Ready after the joins
DRAIN_TIMEOUT = 180


class PlanError(SwarmlabError):
    """The facts contradict the inventory in a way the tool must not repair on its own."""


class TokenRole(StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


def token_secret(role: TokenRole) -> str:
    """The name under which the executor holds a join token (the plan never holds its value)."""
    return f"join-token-{role.value}"


# The CLI asks for a confirmation: the answer is given on the pipe.
REMOVE_INGRESS = "echo y | docker network rm ingress >/dev/null"


def plan_init(infos: Mapping[str, SwarmInfo], managers: Sequence[Node], overlay_pool: str) -> tuple[str, Plan]:
    """Initialise the swarm on the first manager unless a manager already runs one.

    Returns the manager the later steps run on, and the plan.
    """
    clusters: dict[str, list[str]] = {}
    for node in managers:
        info = infos[node.name]
        if info.in_swarm and info.is_manager:
            clusters.setdefault(info.cluster_id, []).append(node.name)
    if len(clusters) > 1:
        found = "; ".join(f"swarm {cid[:12]}: {', '.join(names)}" for cid, names in sorted(clusters.items()))
        raise PlanError(
            f"the managers belong to different swarms ({found}). Fix: keep one, and on the others run "
            "`docker swarm leave --force` (this loses their swarm state), then bootstrap again"
        )
    if clusters:
        names = next(iter(clusters.values()))
        return names[0], Plan(notes=(f"already initialised; {names[0]} is a manager of it",))
    first = managers[0]
    ip = first.private_ip
    command = (
        f"docker swarm init --advertise-addr {ip} --listen-addr {ip}:{SWARM_PORT} "
        f"--default-addr-pool {overlay_pool} --default-addr-pool-mask-length 24"
    )
    return first.name, Plan(
        (
            Run(first.name, command, f"swarm initialised on {first.name} (no manager was in a swarm)"),
            # Every service publishes in host mode behind HAProxy: the routing mesh is never used.
            # Without its network, a joining node sets up no ingress sandbox (bridge, VXLAN, iptables
            # and IPVS rules, the last impossible on our CI machines); on 2 cores, 23 nodes doing so
            # at once made the 20-worker lab's bootstrap take about 13 s instead of 7.5 s.
            Run(first.name, REMOVE_INGRESS, "the routing mesh's ingress network removed (host-mode ports only)"),
        )
    )


# What `docker swarm join` says when its own wait (about 20 s) ends before a manager caught up with Raft.
JOIN_CONTINUES = "will continue in the background"


# The engine's socket: the join goes to its API with curl (on every node: provision/_common.sh).
DOCKER_SOCKET = "/var/run/docker.sock"


def join_command(node: Node, leader: Node, slow_ok: bool = False) -> str:
    """Join through the leader, advertising the node's private address; the token comes on stdin.

    Not `docker swarm join --token ...`: the token would be in the CLI's argv, which every process of
    the node reads in /proc/*/cmdline. The JSON body of POST /swarm/join is written by printf (fixed
    text) and tr (the token, stdin to stdout, cut to its alphabet) into curl's stdin, so the token is
    in no argv. The engine answers 200 or {"message": ...}: printed as the CLI prints it.

    With slow_ok, a join that outlives the engine's own wait counts as started (a Wait that follows checks
    it finished): a manager joining a freshly re-formed swarm on a busy machine can take longer.
    """
    ip = node.private_ip
    request = {
        "ListenAddr": f"{ip}:{SWARM_PORT}",
        "AdvertiseAddr": str(ip),
        "RemoteAddrs": [f"{leader.private_ip}:{SWARM_PORT}"],
    }
    head = json.dumps(request, separators=(",", ":"))[:-1] + ',"JoinToken":"'  # addresses only: no quote
    body = "{ printf '%s' '" + head + "'; tr -cd 'A-Za-z0-9-'; printf '\"}'; }"
    post = (
        f"curl -sS --unix-socket {DOCKER_SOCKET} -H 'Content-Type: application/json' --data-binary @- "
        r"-w '\nHTTP %{http_code}' http://docker/swarm/join 2>&1"
    )
    # The last line is the HTTP status (000 if curl reached no engine); an error's JSON becomes the CLI's words.
    readable = (
        r"""sed -e '/^$/d' -e 's/^{"message":"\(.*\)"}$/Error response from daemon: \1/' -e 's/\\"/"/g' """
        r"""-e 's|^HTTP \([0-9]*\)$|(the engine answered HTTP \1 to POST /swarm/join)|'"""
    )
    join = (
        f"answer=$({body} | {post}); "
        f'if [ "${{answer##*HTTP }}" = 200 ]; then echo "{node.name} joined the swarm through {leader.name}"; '
        rf"""else printf '%s\n' "$answer" | {readable}; false; fi"""
    )
    if not slow_ok:
        return join
    return f'out=$({join}); rc=$?; echo "$out"; [ $rc -eq 0 ] || echo "$out" | grep -q "{JOIN_CONTINUES}"'


def ready_verdict(wanted: set[str]) -> Callable[[str], Verdict]:
    def verdict(output: str) -> Verdict:
        ready = {m.hostname for m in NODE_LIST.parse(output) if m.state == "ready"}
        missing = sorted(wanted - ready)
        if missing:
            return Verdict.waiting(f"not Ready yet: {', '.join(missing)}")
        return Verdict.ready(f"{len(wanted)} nodes Ready")

    return verdict


def plan_join(
    infos: Mapping[str, SwarmInfo], nodes: Sequence[Node], members: Sequence[SwarmNode], leader: Node
) -> Plan:
    """Join every node that is not yet a member, and fix the role of members that have the wrong one.

    Managers join one at a time (each is a Raft membership change), workers all at once; promotions
    and demotions run on the leader. The plan ends by waiting until every node is Ready.
    """
    member_ids = {m.node_id: m for m in members}
    managers: list[Run] = []
    workers: list[Run] = []
    wrong: list[str] = []
    for node in nodes:
        if node.name == leader.name:
            continue
        info = infos[node.name]
        want = TokenRole.MANAGER if node.role is Role.MANAGER else TokenRole.WORKER
        if info.in_swarm and info.node_id in member_ids:
            is_manager = member_ids[info.node_id].is_manager
            if want is TokenRole.MANAGER and not is_manager:
                managers.append(
                    Run(leader.name, f"docker node promote {info.node_id}", f"{node.name} promoted to manager")
                )
            elif want is TokenRole.WORKER and is_manager:
                managers.append(
                    Run(leader.name, f"docker node demote {info.node_id}", f"{node.name} demoted to worker")
                )
            continue
        if info.in_swarm:
            wrong.append(node.name)
            continue
        joined = Run(
            node.name, join_command(node, leader), f"{node.name} joined as {want.value}", stdin=token_secret(want)
        )
        (managers if want is TokenRole.MANAGER else workers).append(joined)
    if wrong:
        raise PlanError(
            f"{', '.join(wrong)} already belong to another swarm. Fix: run `docker swarm leave --force` on "
            "them (or recreate them), then bootstrap again"
        )
    operations: list[Run | Parallel | Wait] = list(managers)
    if workers:
        operations.append(Parallel(tuple(workers), "workers join"))
    wanted = {n.name for n in nodes}
    operations.append(
        Wait(leader.name, NODE_LIST.command, ready_verdict(wanted), "every swarm node Ready", NODES_READY_TIMEOUT)
    )
    notes = () if managers or workers else ("every node is already a member with the right role",)
    return Plan(tuple(operations), notes)


def tokens_needed(plan: Plan) -> set[TokenRole]:
    names = {op.stdin for op in plan.runs if op.stdin}
    return {role for role in TokenRole if token_secret(role) in names}


def no_tasks_verdict(output: str) -> Verdict:
    running = parse_live_tasks(output)
    if running:
        return Verdict.waiting(f"still running on managers: {', '.join(running)}")
    return Verdict.ready("no task runs on a manager")


def plan_drain(members: Sequence[SwarmNode], managers: Sequence[Node], leader: Node) -> Plan:
    """Set every manager to Drain so that only workers run tasks, then wait until none runs a task."""
    names = {m.name for m in managers}
    drains = tuple(
        Run(
            leader.name,
            f"docker node update --availability drain {m.node_id}",
            f"{m.hostname} drained (was {m.availability.capitalize()})",
        )
        for m in members
        if m.hostname in names and m.state == "ready" and m.availability != "drain"
    )
    manager_ids = [m.node_id for m in members if m.hostname in names]
    if not manager_ids:
        return Plan(notes=("no manager is a member yet: nothing to drain",))
    wait = Wait(
        leader.name, running_on(manager_ids).command, no_tasks_verdict, "no task on a manager", DRAIN_TIMEOUT, 2
    )
    notes = () if drains else ("every manager is already drained",)
    return Plan((*drains, wait), notes)
