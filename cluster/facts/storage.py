"""Storage: whether a worker's kernel mounts NFS, whether it sees the storage node's export, who owns
the data directories, and which images the cluster registry and the image cache hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cluster.facts import Fact
from cluster.images import Build
from registry.model import PUSH_ENDPOINT

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

# What a manifest request accepts: an image's manifest (Docker's v2, OCI) or an index of them. Without
# its type in Accept, distribution would answer another form of it, with another digest.
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)


@dataclass(frozen=True)
class RegistryCheck:
    """What the storage node answered: the images the registry has (with their manifests' digests),
    and those the image cache has."""

    present: frozenset[str]
    cached: frozenset[str]
    digests: Mapping[str, str] = field(default_factory=dict)


def _digest(word: str) -> str:
    algorithm, _, hexdigest = word.partition(":")
    ok = algorithm == "sha256" and len(hexdigest) == 64 and all(c in "0123456789abcdef" for c in hexdigest)
    return word if ok else ""


def parse_registry_check(output: str) -> RegistryCheck:
    answers = [line.split() for line in output.splitlines() if len(line.split()) in (3, 4)]
    return RegistryCheck(
        frozenset(ref for ref, registry, _, *_ in answers if registry == "yes"),
        frozenset(ref for ref, _, cached, *_ in answers if cached == "yes"),
        {
            ref: _digest(rest[0])
            for ref, registry, _, *rest in answers
            if registry == "yes" and rest and _digest(rest[0])
        },
    )


def registry_check(builds: Sequence[Build], cache_path: str | None = None) -> Fact[RegistryCheck]:
    """`name:tag yes|no yes|no digest|-` for each image (in the registry, and its manifest's digest? in
    the image cache at `cache_path`?), in one round trip to the storage node: the registry asked on its
    writable endpoint (the storage node's loopback, where the builds push; the digest is the one the
    stack pins), a HEAD whose Docker-Content-Digest header names the manifest; a finished cache entry
    has its manifest (entries are renamed into place when complete)."""
    refs = " ".join(f"{b.name}:{b.context.tag}" for b in builds)
    url = f"http://{PUSH_ENDPOINT}/v2/swarmlab/$name/manifests/$tag"
    in_cache = f'[ -f "{cache_path}/$name-$tag/manifest.json" ]' if cache_path else "false"
    accept = ", ".join(MANIFEST_TYPES)
    return Fact(
        f"for ref in {refs}; do name=${{ref%%:*}}; tag=${{ref#*:}}; "
        f"d=$(curl -sfI -H 'Accept: {accept}' {url} | tr -d '\\r' "
        "| awk 'tolower($1) == \"docker-content-digest:\" {print $2}'); "
        'if [ -n "$d" ]; then r=yes; else r=no; d=-; fi; '
        f"if {in_cache}; then c=yes; else c=no; fi; "
        'echo "$ref $r $c $d"; done',
        parse_registry_check,
    )
