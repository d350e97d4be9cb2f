"""How a node runs a daemon driven by one configuration file (HAProxy, nfs-ganesha): pure data.

The leaf models (haproxy/, nfs/) return one with their configuration text; cluster/ plans the push
(upload, validate, swap, reload or start). On a VM systemd manages the daemon; in a lab node (no
systemd) it runs from its pid file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DaemonSpec:
    name: str
    config_path: str
    pid_file: str
    unit: str  # systemd unit
    start: str  # how to start it without systemd (must detach and close stdio)
    reload: str  # how to reload it without systemd; "{pid}" is the master's pid
    validate: str | None = None  # "{path}" is the file to check
    ready: str | None = None  # a command that succeeds once the daemon serves (checked after a change)
    systemd_reload: str = "reload"  # "restart" for a daemon that reads some of its files only at start
    config_mode: int = 0o644  # 0o600 for a file that holds a secret (keepalived's VRRP password)

    @property
    def new_path(self) -> str:
        return self.config_path + ".new"


def stop_by_pid(pid_file: str) -> str:
    """Without systemd: stop the daemon named by its pid file and wait until that process is gone."""
    return f"pid=$(head -n1 {pid_file}); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.2; done"


def restart_by_pid(pid_file: str, start: str) -> str:
    """A reload that is a restart, without systemd: stop the daemon (the new one would find its port or
    pid file taken), then `start` it again."""
    return f"{stop_by_pid(pid_file)}; {start}"
