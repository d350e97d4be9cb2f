"""Managers and quorum: what each manager of the inventory says, asked on its own, and what they
say together about the swarm's Raft majority."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.facts import Fact
from cluster.facts.swarm import SwarmInfo, parse_swarm_info
from cluster.facts.text import sections
from topology import RAFT_DIR

# One round trip per manager, three `---`-separated parts: its swarm state (`docker info`'s JSON),
# `leader=yes|no` (whether it sees a leader: `node ls` needs one), and `snap=`, `wal=`, `wal_mtime=`
# lines saying where its Raft log stands. The log is encrypted, so its position is read from file
# names (snapshot term-index, WAL seq-index, in hex) and the newest WAL's last write time.
MANAGER_PROBE_COMMAND = (
    "docker info --format '{{json .Swarm}}' || exit 1; echo ---; "
    "timeout 20 docker node ls -q >/dev/null 2>&1 && echo leader=yes || echo leader=no; echo ---; "
    f"cd {RAFT_DIR} 2>/dev/null && "
    "snap=$(ls snap-v3-encrypted 2>/dev/null | grep '[.]snap$' | sort | tail -n1) && "
    "wal=$(ls wal-v3-encrypted 2>/dev/null | grep '[.]wal$' | sort | tail -n1) && "
    'printf \'snap=%s\\nwal=%s\\nwal_mtime=%s\\n\' "$snap" "$wal" "$(stat -c %.9Y wal-v3-encrypted/$wal 2>/dev/null)"; true'
)


# Prints the newest Raft snapshot file of this manager ("<term>-<index>.snap", hex), or nothing; its
# exit status is grep's (1: none). recover's fresh snapshot compares it before and after.
NEWEST_SNAPSHOT_COMMAND = f"ls {RAFT_DIR}/snap-v3-encrypted 2>/dev/null | grep '[.]snap$' | sort | tail -n1"


@dataclass(frozen=True)
class RaftPosition:
    snapshot: str = ""  # newest snapshot file, "<term>-<index>.snap"
    wal: str = ""  # newest WAL file, "<seq>-<first index>.wal"
    wal_mtime: float = 0.0

    @property
    def rank(self) -> tuple[int, int, float]:
        """Later is more up to date: the snapshot's index, then the newest WAL's first index, then when
        it was last written (the log itself is encrypted; clocks are assumed in sync, as NTP keeps them)."""

        def index(name: str) -> int:
            digits = name.partition(".")[0].rpartition("-")[2]
            return int(digits, 16) if digits else -1

        return index(self.snapshot), index(self.wal), self.wal_mtime


@dataclass(frozen=True)
class ManagerProbe:
    """What one manager (of the inventory) says, or why it says nothing."""

    name: str
    answers: bool
    problem: str = ""  # why it does not answer
    info: SwarmInfo | None = None
    sees_leader: bool = False
    raft: RaftPosition = RaftPosition()

    @property
    def is_manager(self) -> bool:
        return self.info is not None and self.info.in_swarm and self.info.is_manager


def parse_manager_probe(name: str, output: str) -> ManagerProbe:
    parts = [*sections(output), "", ""]
    values = dict(line.split("=", 1) for line in parts[2].splitlines() if "=" in line)
    mtime = values.get("wal_mtime", "")
    raft = RaftPosition(values.get("snap", ""), values.get("wal", ""), float(mtime) if mtime else 0.0)
    return ManagerProbe(name, True, info=parse_swarm_info(parts[0]), sees_leader="leader=yes" in parts[1], raft=raft)


def manager_probe(name: str) -> Fact[ManagerProbe]:
    """The probe of the manager called `name` (the name goes into the parsed probe)."""
    return Fact(MANAGER_PROBE_COMMAND, lambda output: parse_manager_probe(name, output))


@dataclass(frozen=True)
class Quorum:
    """What the managers of the inventory say about the swarm's Raft majority."""

    probes: tuple[ManagerProbe, ...]

    @property
    def answering(self) -> tuple[ManagerProbe, ...]:
        """Managers whose engine answers and still holds swarm manager state."""
        return tuple(p for p in self.probes if p.answers and p.is_manager)

    @property
    def has_quorum(self) -> bool:
        return any(p.sees_leader for p in self.probes)

    @property
    def leader_seen_by(self) -> str:
        return next((p.name for p in self.probes if p.sees_leader), "")

    @property
    def members(self) -> int:
        """The Raft membership as the answering managers know it (the inventory's count otherwise)."""
        known = [len(p.info.managers) for p in self.answering if p.info is not None and p.info.managers]
        return max(known) if known else len(self.probes)

    @property
    def needed(self) -> int:
        return self.members // 2 + 1

    def summary(self) -> str:
        return f"{len(self.answering)} of {self.members} managers answer; Raft needs {self.needed}"
