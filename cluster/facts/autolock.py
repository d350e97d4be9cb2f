"""Swarm autolock facts: whether the swarm asks for it, its current unlock key (a secret, held in memory
and written to the state directory only), and whether a manager's key is encrypted on its disk."""

from __future__ import annotations

from cluster.facts import Fact

# Answers on a manager that sees a leader.
AUTOLOCK_ON = Fact(
    "docker info --format '{{json .Swarm.Cluster.Spec.EncryptionConfig.AutoLockManagers}}'",
    lambda output: output.strip() == "true",
)
UNLOCK_KEY = Fact("docker swarm unlock-key -q", str.strip)
# The manager's TLS key, which also carries the Raft store's key in its headers: an encrypted PEM when
# the swarm was locked as it was written. `docker swarm init --force-new-cluster` cannot re-form a swarm
# from such a manager (moby/moby#36852: the new node is started without the unlock key).
KEY_FILE = "/var/lib/docker/swarm/certificates/swarm-node.key"
KEY_ENCRYPTED = Fact(
    f"grep -c 'BEGIN ENCRYPTED PRIVATE KEY' {KEY_FILE} 2>/dev/null; true",
    lambda output: output.strip() not in ("", "0"),
)
