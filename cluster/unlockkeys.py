"""The swarm's unlock keys in the state directory: one file, mode 600, the newest key first and the
ones before it after. The old ones stay because a manager that was down while the key changed (a
rotation, a backup) still wants the key it was locked with, as Docker's guide warns. Never printed:
they go to the engines on stdin only (cluster/plans/autolock.py)."""

from __future__ import annotations

from collections.abc import Sequence

from cluster.errors import SwarmlabError
from cluster.facts import read
from cluster.facts.autolock import UNLOCK_KEY
from cluster.inventory import Node
from cluster.runners import Runner
from cluster.state import StatePaths, write_private

# The name under which the executor holds the keys for an unlock: newest first, one per line.
UNLOCK_SECRET = "swarm-unlock-keys"
KEYS_KEPT = 3  # the newest key and the two before it


def key_history(stored: Sequence[str], current: str) -> tuple[str, ...]:
    """The keys to keep: `current` first, then the stored ones before it, at most KEYS_KEPT."""
    keys = [current, *(k for k in stored if k != current)]
    return tuple(k for k in keys if k)[:KEYS_KEPT]


def stored_keys(paths: StatePaths) -> tuple[str, ...]:
    """The keys kept, newest first (none before autolock was first turned on)."""
    if not paths.unlock_keys.exists():
        return ()
    return tuple(line.strip() for line in paths.unlock_keys.read_text().splitlines() if line.strip())


def store_key(paths: StatePaths, key: str) -> bool:
    """Keep `key` as the newest; returns whether the file changed (a key already newest changes nothing)."""
    stored = stored_keys(paths)
    kept = key_history(stored, key)
    if not kept or (kept == stored and not paths.unlock_keys.stat().st_mode & 0o077):
        return False
    write_private(paths.unlock_keys, "".join(f"{k}\n" for k in kept).encode())
    return True


def keep_current_key(runner: Runner, leader: Node, paths: StatePaths) -> bool:
    """The swarm's unlock key as the leader gives it now, kept as the newest; whether it was new."""
    return store_key(paths, read(runner, leader, UNLOCK_KEY))


def unlock_secrets(paths: StatePaths, locked: Sequence[str]) -> dict[str, str]:
    """What the executor feeds an unlock (plans.autolock.plan_unlock): every kept key, newest first."""
    keys = stored_keys(paths)
    if not keys:
        raise SwarmlabError(
            f"{', '.join(locked)} locked (swarm autolock) and {paths.unlock_keys} holds no key. Fix: run "
            "`docker swarm unlock` on each with the key you were given when autolock was turned on"
        )
    return {UNLOCK_SECRET: "".join(f"{key}\n" for key in keys)}
