"""A node's daemons and files: a daemon driven by one configuration file, a file's digest or content,
whether systemd runs the node, its machine type, an image in its engine, the cluster map's container."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.facts import Fact


@dataclass(frozen=True)
class DaemonFacts:
    config_sha: str
    systemd: bool
    running: bool


def parse_daemon_facts(output: str) -> DaemonFacts:
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return DaemonFacts(values.get("config_sha", ""), values.get("systemd") == "yes", values.get("running") == "yes")


def daemon_facts(config_path: str, pid_file: str, unit: str = "") -> Fact[DaemonFacts]:
    """Its configuration file's sha256, whether systemd runs the node, whether the daemon runs: under
    systemd, its unit is active (Debian's docker-registry unit writes no pid file, so the pid file alone
    said "not running" and every run restarted it: found by the rehearsal); otherwise its pid file names
    a live process."""
    pid_alive = f'test -s {pid_file} && kill -0 "$(head -n1 {pid_file})"'
    alive = (
        f"if test -d /run/systemd/system; then systemctl is-active --quiet {unit}; else {pid_alive}; fi"
        if unit
        else pid_alive
    )
    return Fact(
        f"printf 'config_sha=%s\\n' \"$(sha256sum {config_path} 2>/dev/null | cut -d' ' -f1)\"; "
        "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\"; "
        f"printf 'running=%s\\n' \"$( ({alive}) 2>/dev/null && echo yes || echo no)\"",
        parse_daemon_facts,
    )


def parse_file_sha(output: str) -> str:
    word = output.strip().split()[0] if output.strip() else ""
    return word if len(word) == 64 and all(c in "0123456789abcdef" for c in word) else ""


def file_sha(path: str) -> Fact[str]:
    """The sha256 of a file on a node, or "" when it does not exist."""
    return Fact(f"sha256sum {path} 2>/dev/null | cut -d' ' -f1; true", parse_file_sha)


def file_content(path: str) -> Fact[str]:
    """A text file's content (read with check=False: "" when it does not exist)."""
    return Fact(f"cat {path}", str)


def _yes(output: str) -> bool:
    return output.strip() == "yes"


SYSTEMD = Fact("test -d /run/systemd/system && echo yes || echo no", _yes)
MACHINE = Fact("uname -m", str.strip)  # x86_64, aarch64: which wheels a build needs
# Changes at every boot: tells a rebooted machine from one that has not gone down yet (maintain-nodes).
# The kernel's boot id (a VM's reboot changes it) and PID 1's start time in ticks since the kernel booted
# (a container's restart changes it: the rehearsal's nodes share this machine's kernel, so their boot id
# never changes). /proc/1/stat's fields after "(comm) " start at the 3rd.
BOOT_ID = Fact("echo $(cat /proc/sys/kernel/random/boot_id) $(sed 's/.*) //' /proc/1/stat | cut -d' ' -f20)", str.strip)


def image_present(tag: str) -> Fact[bool]:
    return Fact(f"docker image inspect {tag} >/dev/null 2>&1 && echo yes || echo no", _yes)


# --- the cluster map's container on a manager ----------------------------------------------------

MAP_CONTAINER = "swarmlab-map"


@dataclass(frozen=True)
class MapFacts:
    image: str  # "" when there is no such container
    running: bool


def parse_map_facts(output: str) -> MapFacts:
    image, _, running = output.strip().partition("|")
    return MapFacts(image, running == "true")


MAP = Fact(
    f"docker inspect --format '{{{{.Config.Image}}}}|{{{{.State.Running}}}}' {MAP_CONTAINER} 2>/dev/null; true",
    parse_map_facts,
)
