"""Storage: whether a worker's kernel mounts NFS, whether it sees the storage node's export, who owns
the data directories, and which images the cluster registry and the image cache hold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster.facts import Fact
from cluster.images import Build
from registry.model import trust_path

# Told by its exit status (read with check=False, `.ok`): the kernel mounts NFS v4, loading the
# module when it is not loaded yet.
NFS_CLIENT_COMMAND = "grep -qw nfs4 /proc/filesystems || modprobe -q nfs4"
EXPORT_ID_FILE = ".swarmlab-export-id"


def export_id(export_dir: str) -> Fact[str]:
    """The export's id (made once by the nfs task); a worker that reads the same id sees the export itself."""
    return Fact(f"cat {export_dir}/{EXPORT_ID_FILE} 2>/dev/null; true", str.strip)


def parse_owners(output: str) -> dict[str, int]:
    found = {}
    for line in output.splitlines():
        path, _, uid = line.strip().rpartition(" ")
        if path and uid.isdigit():
            found[path] = int(uid)
    return found


def owners(directories: Sequence[str]) -> Fact[dict[str, int]]:
    """`path uid` for each directory that exists; absent ones print nothing."""
    return Fact("stat -c '%n %u' " + " ".join(directories) + " 2>/dev/null; true", parse_owners)


# --- the cluster registry and the image cache ------------------------------------------------------

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class RegistryCheck:
    """What the storage node answered: the images the registry has, and those the image cache has."""

    present: frozenset[str]
    cached: frozenset[str]


def parse_registry_check(output: str) -> RegistryCheck:
    answers = [line.split() for line in output.splitlines() if len(line.split()) == 3]
    return RegistryCheck(
        frozenset(ref for ref, registry, _ in answers if registry == "yes"),
        frozenset(ref for ref, _, cached in answers if cached == "yes"),
    )


def registry_check(builds: Sequence[Build], registry: str, cache_path: str | None = None) -> Fact[RegistryCheck]:
    """`name:tag yes|no yes|no` for each image (in the registry? in the image cache at `cache_path`?),
    in one round trip to the storage node: the registry asked over TLS, verified with the CA the engines
    trust for it; a finished cache entry has its manifest (entries are renamed into place when complete)."""
    refs = " ".join(f"{b.name}:{b.context.tag}" for b in builds)
    url = f"https://{registry}/v2/swarmlab/$name/manifests/$tag"
    in_cache = f'[ -f "{cache_path}/$name-$tag/manifest.json" ]' if cache_path else "false"
    return Fact(
        f"for ref in {refs}; do name=${{ref%%:*}}; tag=${{ref#*:}}; "
        f"if curl -sf -o /dev/null --cacert {trust_path(registry)} -H 'Accept: {MANIFEST_V2}' {url}; "
        f"then r=yes; else r=no; fi; if {in_cache}; then c=yes; else c=no; fi; "
        'echo "$ref $r $c"; done',
        parse_registry_check,
    )
