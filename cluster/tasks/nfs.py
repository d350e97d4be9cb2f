"""The nfs task: the storage node's NFS v4 export (nfs-ganesha), pushed like any daemon's config, then
checked at the protocol level with libnfs (no kernel NFS client needed)."""

from __future__ import annotations

import nfs.model as nfs
from cluster.facts import read
from cluster.facts.daemons import daemon_facts
from cluster.facts.storage import EXPORT_ID_FILE, export_id
from cluster.operations import Plan, Run, Wait
from cluster.plans.daemon import plan_push
from cluster.session import Session
from cluster.waiting import Verdict

PROBE_TIMEOUT = 30


def _answers(output: str) -> Verdict:
    return Verdict.ready() if output.strip().endswith("ready") else Verdict.waiting(output.strip()[-300:])


def configure_nfs(session: Session) -> None:
    storage = session.inventory.storage
    if storage is None:
        return
    clients = (*(str(w.private_ip) for w in session.inventory.workers), str(storage.private_ip))
    config = nfs.build(clients)
    with session.phase("nfs", f"NFS v4 export {config.pseudo_path} on {storage.name} (nfs-ganesha)") as p:
        daemon = nfs.DAEMON
        facts = read(session.runner, storage, daemon_facts(daemon.config_path, daemon.pid_file, daemon.unit))
        url = config.probe_url(str(storage.private_ip))
        plan = Plan((Run(storage.name, f"mkdir -p {config.export_dir}", "the export directory", changes=False),))
        if not read(session.runner, storage, export_id(config.export_dir)):
            make_id = f"od -An -N16 -tx1 /dev/urandom | tr -d ' \\n' > {config.export_dir}/{EXPORT_ID_FILE}"
            plan += Plan((Run(storage.name, make_id, "the export got its id (workers that see it share the export)"),))
        plan += plan_push(storage.name, daemon, facts, nfs.render_config(config))
        probe = f"nfs-ls '{url}' 2>&1 >/dev/null && echo ready"
        plan += Plan((Wait(storage.name, probe, _answers, f"{url} answers (libnfs' nfs-ls)", PROBE_TIMEOUT),))
        session.executor().execute(plan, p)
