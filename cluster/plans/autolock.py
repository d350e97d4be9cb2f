"""Swarm autolock, pure: the managers' Raft store and TLS key encrypted at rest with a key the engine
does not keep (Docker's "Lock your swarm"), so a manager whose engine restarts comes back locked and
serves nothing until it is given the key.

The keys live in the operator's state directory (mode 600, cluster/unlockkeys.py, which says why the
older ones are kept). The tasks unlock every locked manager they meet (bootstrap, lab-up, recover,
maintain-nodes).

A key goes to the engine on stdin, never in an argv: POST /swarm/unlock over the engine's socket,
the body written by the shell's printf builtin (no process, so no /proc/*/cmdline holds it).
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.facts.autolock import KEY_ENCRYPTED
from cluster.facts.managers import Quorum
from cluster.facts.swarm import LOCAL_NODE_STATE
from cluster.operations import Plan, Run, Wait
from cluster.plans.swarm import DOCKER_SOCKET
from cluster.unlockkeys import UNLOCK_SECRET
from cluster.waiting import Verdict

UNLOCK_TIMEOUT = 60  # a manager unlocked takes a few seconds to serve again
LOCAL_STATE = LOCAL_NODE_STATE.command


def locked_managers(quorum: Quorum) -> list[str]:
    """The managers that answer with a locked swarm, in inventory order."""
    return [p.name for p in quorum.probes if p.info is not None and p.info.state == "locked"]


def unlock_command(node: str) -> str:
    """Unlock this engine with the first key on stdin (one per line) it accepts; an engine not locked
    is left alone. Each try is POST /swarm/unlock; its answer's status decides (200: unlocked)."""
    post = (
        f"curl -sS --unix-socket {DOCKER_SOCKET} -H 'Content-Type: application/json' --data-binary @- "
        r"-o /dev/null -w '%{http_code}' http://docker/swarm/unlock 2>/dev/null"
    )
    return (
        f'state=$({LOCAL_STATE}); if [ "$state" != locked ]; then echo "{node} is not locked ($state)"; exit 0; fi; '
        "tried=0; while IFS= read -r key; do "
        # Only the key's alphabet ("SWMKEY-1-" and base64): nothing else can reach the JSON body.
        'case "$key" in ""|*[!A-Za-z0-9+/=-]*) continue;; esac; tried=$((tried + 1)); '
        """code=$(printf '{"UnlockKey":"%s"}' "$key" | """ + post + "); "
        f'if [ "$code" = 200 ]; then echo "{node} unlocked with key $tried of the state directory\'s"; exit 0; fi; '
        "done; "
        f'echo "{node} refused the $tried unlock key(s) the state directory holds" >&2; exit 1'
    )


def _unlocked(output: str) -> Verdict:
    state = output.strip()
    if state == "active":
        return Verdict.ready("its swarm is active")
    return Verdict.waiting(f"its swarm is {state or 'not answering'}")


def plan_unlock(locked: Sequence[str]) -> Plan:
    """Unlock each locked manager, then wait until it is active again (one at a time: each is quick)."""
    operations: list[Run | Wait] = []
    for node in locked:
        operations.append(
            Run(
                node,
                unlock_command(node),
                f"{node} unlocked (autolock)",
                stdin=UNLOCK_SECRET,
                hint="the state directory's swarm-unlock-keys holds no key this manager takes: "
                "if you unlocked or rotated by hand, run `docker swarm unlock` there with that key",
            )
        )
        operations.append(Wait(node, LOCAL_STATE, _unlocked, f"{node} active", UNLOCK_TIMEOUT, 1))
    return Plan(tuple(operations))


def plan_autolock(leader: str, *, on: bool, wanted: bool) -> Plan:
    """Turn autolock on or off on the swarm when it is not as wanted. The CLI prints the new key: it
    goes nowhere (the task reads it with facts.autolock.UNLOCK_KEY, which it does not log)."""
    if on == wanted:
        return Plan(notes=(f"autolock already {'on' if on else 'off'}",))
    flag = "true" if wanted else "false"
    return Plan(
        (
            Run(
                leader,
                f"docker swarm update --autolock={flag} >/dev/null",
                "autolock turned on: a restarted manager waits for the unlock key"
                if wanted
                else "autolock turned off (the managers' keys are on their disks unencrypted)",
            ),
        )
    )


def plan_rotate(leader: str) -> Plan:
    return Plan(
        (
            Run(
                leader,
                "docker swarm unlock-key --rotate -q >/dev/null",
                "unlock key rotated (the state directory keeps the one before it too)",
            ),
        )
    )


def _key_plain(output: str) -> Verdict:
    if KEY_ENCRYPTED.parse(output):
        return Verdict.waiting("its key is still encrypted on its disk")
    return Verdict.ready("its key is unencrypted on its disk")


def plan_unlocked_while(leader: str, manager: str) -> Plan:
    """Autolock off until `manager` has rewritten its key unencrypted (each manager does so when it
    sees the change): a copy of its swarm directory taken then can re-form a swarm (`restore --swarm`)."""
    wait = Wait(manager, KEY_ENCRYPTED.command, _key_plain, f"{manager}'s key unencrypted", UNLOCK_TIMEOUT, 1)
    return plan_autolock(leader, on=True, wanted=False) + Plan((wait,))
