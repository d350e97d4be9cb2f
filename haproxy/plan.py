"""HAProxy as a managed daemon: validated with `haproxy -c` before the swap, reloaded through its
master (master-worker mode: SIGUSR2, or systemd's reload, which does the same), so the old workers
finish their connections and none is refused."""

from __future__ import annotations

from cluster.daemon import Daemon
from haproxy.model import CONFIG_PATH

PID_FILE = "/run/haproxy.pid"
HAPROXY = Daemon(
    name="HAProxy",
    config_path=CONFIG_PATH,
    pid_file=PID_FILE,
    unit="haproxy",
    start=f"mkdir -p /run/haproxy && haproxy -W -D -p {PID_FILE} -f {CONFIG_PATH} </dev/null >/dev/null 2>&1",
    reload="kill -USR2 {pid}",
    validate="haproxy -c -f {path}",  # not -q: its complaint is the error message
)
