"""backup and restore: the swarm state and the data each deployed bundle declares, into a timestamped
directory of the cluster's state directory; the data back into the running services (also a backup
of another cluster, into this one), or (--swarm) the swarm state back onto a cluster whose managers all
lost theirs (its own backup only).

Facts are read and every item is checked before anything is stopped, dumped or loaded; a backup that
fails part-way leaves no directory behind; a restore verifies the whole backup first. With --keep N, a
backup that completed prunes the cluster's older ones beyond the N newest (never anything else).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cluster import backups
from cluster.backups import BackupError, BackupManifest, DataPart, SwarmPart
from cluster.errors import ConfigError, OptionErrors
from cluster.facts import read
from cluster.facts.autolock import AUTOLOCK_ON
from cluster.facts.daemons import SYSTEMD
from cluster.facts.listings import STACK_NAMES
from cluster.facts.services import SWARM_STATE, SwarmState
from cluster.inventory import Node
from cluster.operations import Plan, Wait
from cluster.plans.autolock import locked_managers, plan_autolock, plan_unlocked_while
from cluster.plans.backup import (
    BackupRefused,
    Located,
    check_keep,
    check_stacks_deployed,
    check_swarm_origin,
    choose_manager,
    plan_data_backup,
    plan_data_restore,
    plan_prune,
    plan_swarm_backup,
    plan_swarm_restore,
    restore_origin,
)
from cluster.plans.nodes import MOVE_TIMEOUT, placed_verdict
from cluster.plans.services import running_tasks, wanted_count
from cluster.progress import say
from cluster.reads import find_leader, probe_manager, probe_managers, swarm_state
from cluster.session import Session
from cluster.unlockkeys import keep_current_key
from cluster.workload import BackupSpec, Workload, known_workloads, load_workload


def deployed_workloads(session: Session, leader: Node) -> list[Workload]:
    listed = set(read(session.runner, leader, STACK_NAMES))
    return [load_workload(name, session.config.environment) for name in sorted(listed & set(known_workloads()))]


def locate(state: SwarmState, workload: Workload, spec: BackupSpec) -> Located:
    name = f"{workload.name}_{spec.service}"
    service = next((s for s in state.services if s.name == name), None)
    if service is None:
        raise BackupError(
            f"{workload.name}: backup item {spec.name} names service {spec.service}, which is not deployed"
        )
    running = running_tasks(state, service)
    if not running:
        raise BackupError(f"{name} has no running task to {spec.name!r} from or into: `fab status` shows why")
    return Located(workload.name, spec, name, state.hostname(running[0].node_id))


def keep_option(value: str) -> int | None:
    """--keep: how many of the newest backups to keep (None, for '', keeps every one); checked before
    anything runs."""
    if not value.strip():
        return None
    try:
        keep = int(value)
        check_keep(keep)
    except ValueError:
        fix = "give how many of the newest backups to keep: 1 or more"
        raise OptionErrors([ConfigError("--keep", value, "is not a whole number", fix)]) from None
    except ConfigError as error:
        raise OptionErrors([error]) from None
    return keep


def backup_and_prune(session: Session, keep: int | None) -> Path | None:
    """`fab backup [--keep N]`: take a backup; once it is whole (or would be, in a dry run), remove the
    cluster's older ones beyond the N newest."""
    directory = backup(session)
    if keep is not None:
        prune_backups(session, keep)
    return directory


def prune_backups(session: Session, keep: int) -> None:
    """Remove the cluster's backups beyond the `keep` newest; leave alone whatever is not one of them."""
    where, cluster = session.state.backups, session.inventory.cluster
    with session.phase("prune-backups", f"keep the {keep} newest backups of {cluster}, remove the older ones") as p:
        pruning = plan_prune(backups.survey(where), cluster, keep, taking=session.dry_run)
        for ignored in pruning.ignored:
            p.note(f"left alone: {where}/{ignored}")
        for name in pruning.removed:
            if session.dry_run:
                p.planned(f"would remove backup {where / name}", True)
            else:
                backups.remove(where / name)
                p.changed(f"removed backup {where / name}")
        if not pruning.removed:
            p.note(f"{len(pruning.kept)} backup(s) of {cluster}: none beyond the newest {keep}")


def backup(session: Session) -> Path | None:
    """Take a backup; returns its directory (None in a dry run)."""
    runner, inventory = session.runner, session.inventory
    with session.phase("backup-facts", "which manager may stop for the swarm state; where each data item lives") as p:
        leader = find_leader(runner)
        state = swarm_state(runner, leader)
        manager = choose_manager(state.nodes)
        node = inventory.node(manager.hostname)
        systemd = read(runner, node, SYSTEMD)
        autolocked = read(runner, leader, AUTOLOCK_ON)
        items = [locate(state, w, spec) for w in deployed_workloads(session, leader) for spec in w.manifest.backups]
        p.note(f"swarm state from {manager.hostname}; data: {', '.join(i.relative for i in items) or 'none declared'}")
    paths = session.state
    stamp = backups.stamp()
    directory = paths.backups / stamp
    if not session.dry_run:
        backups.create(directory)
    try:
        with session.phase(
            "backup-swarm", f"stop the engine on {manager.hostname}, copy the swarm state, start it"
        ) as p:
            local = directory / backups.SWARM_ARCHIVE
            if autolocked:  # a locked copy could not re-form a swarm (moby/moby#36852): taken unlocked
                session.executor().execute(plan_unlocked_while(leader.name, manager.hostname), p)
            try:
                session.executor().execute(
                    plan_swarm_backup(manager.hostname, leader.name, systemd, local, stamp, cluster=inventory.cluster),
                    p,
                )
            finally:
                if autolocked:  # on again whatever the copy did, with a new key
                    session.executor().execute(plan_autolock(leader.name, on=False, wanted=True), p)
                    if not session.dry_run and keep_current_key(runner, leader, paths):
                        p.changed(f"the new unlock key kept in {paths.unlock_keys}")
        with session.phase("backup-data", "dump each bundle's declared data in its service's container, fetch it") as p:
            for item in items:
                if not session.dry_run:
                    (directory / item.stack).mkdir(mode=0o700, exist_ok=True)
                session.executor().execute(plan_data_backup(item, directory / item.relative, stamp), p)
            if session.dry_run:
                return None
            manifest = BackupManifest(
                cluster=inventory.cluster,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                swarm=SwarmPart(taken_on=manager.hostname, file=backups.saved(directory, backups.SWARM_ARCHIVE)),
                data=tuple(
                    DataPart(
                        stack=i.stack,
                        name=i.spec.name,
                        service=i.service,
                        file=backups.saved(directory, i.relative),
                    )
                    for i in items
                ),
            )
            backups.write_manifest(directory, manifest)
            p.changed(f"backup complete: {directory}")
    except BaseException:
        if not session.dry_run:
            backups.discard(directory)
            say(f"    the backup did not complete; {directory} removed")
        raise
    return directory


def restore(session: Session, from_dir: str = "") -> None:
    """Load a backup's workload data into the running services (the swarm state is for `--swarm`). The
    backup may come from another cluster (--from DIR, anywhere): its data goes into this cluster's
    services, matched by stack and item name, loaded with this cluster's own credentials."""
    cluster = session.inventory.cluster
    with session.phase("restore-check", "verify the whole backup and find where each item goes") as p:
        directory = Path(from_dir).expanduser() if from_dir else backups.latest(session.state.backups, cluster)
        manifest = backups.verify(directory)
        p.note(f"{restore_origin(manifest.cluster, cluster)}: {directory}")
        p.note(f"taken {manifest.created} on cluster {manifest.cluster}, every file whole")
        if not manifest.data:
            raise BackupError(f"{directory} holds no workload data to restore")
        leader = find_leader(session.runner)
        state = swarm_state(session.runner, leader)
        deployed = {w.name: w for w in deployed_workloads(session, leader)}
        check_stacks_deployed([part.stack for part in manifest.data], deployed, cluster)
        targets = [(part, _item(state, deployed, part)) for part in manifest.data]
    with session.phase("restore-data", "load each item into its service's running container") as p:
        for part, item in targets:
            content = (directory / part.file.path).read_bytes()
            session.executor().execute(plan_data_restore(item, content, directory.name), p)
    with session.phase("converge", "wait until the restored stacks' services run their replicas, healthy") as p:
        # Replicas, not update states: a restore changes no spec, and an old rolled-back update is not its failure.
        stacks = {item.stack for _, item in targets}
        expected = {s.name: wanted_count(s, state.nodes) for s in state.services if s.stack in stacks}
        wait = Wait(leader.name, SWARM_STATE.command, placed_verdict(expected), "every service runs", MOVE_TIMEOUT, 2)
        session.executor().execute(Plan((wait,)), p)


def _item(state: SwarmState, deployed: dict[str, Workload], part: DataPart) -> Located:
    workload = deployed[part.stack]  # check_stacks_deployed came first
    spec = next((b for b in workload.manifest.backups if b.name == part.name), None)
    if spec is None:
        raise BackupError(f"stack {part.stack}'s bundle no longer declares backup item {part.name}: cannot load it")
    return locate(state, workload, spec)


def restore_swarm(session: Session, from_dir: str = "") -> Node:
    """Put a backup's swarm state back for a cluster whose managers all lost theirs and re-form the
    swarm from it; returns the manager it runs on. Bringing every other node back is the next step of
    the flow (cluster/flows.py, recover's bring_back_members)."""
    inventory, runner = session.inventory, session.runner
    with session.phase("restore-check", "verify the backup; make sure no manager still holds swarm state") as p:
        directory = (
            Path(from_dir).expanduser() if from_dir else backups.latest(session.state.backups, inventory.cluster)
        )
        manifest = backups.verify(directory)
        check_swarm_origin(directory, manifest.cluster, inventory.cluster)
        if manifest.swarm is None:
            raise BackupError(f"{directory} holds no swarm state")
        quorum = probe_managers(runner)
        if quorum.has_quorum:
            raise BackupRefused(
                f"the swarm has quorum ({quorum.summary()}): restoring its state would replace a working swarm "
                "and lose what changed since the backup. `fab restore` without --swarm loads workload data"
            )
        locked = locked_managers(quorum)
        if locked:
            raise BackupRefused(
                f"{', '.join(locked)} hold the swarm's state, locked (autolock), newer than any backup: "
                "`fab recover` unlocks them and brings the swarm back"
            )
        holders = [probe.name for probe in quorum.answering]
        if holders:
            raise BackupRefused(
                f"{', '.join(holders)} still hold the swarm's state, newer than any backup: "
                "`fab recover` re-forms the swarm from it"
            )
        names = [m.name for m in inventory.managers]
        target = inventory.node(manifest.swarm.taken_on if manifest.swarm.taken_on in names else names[0])
        if not probe_manager(runner, target).answers and not session.provider.restore_node(
            session.config, target, session.executor(), p
        ):
            raise BackupError(f"{target.name} does not answer: bring its machine back, then restore again")
        systemd = read(runner, target, SYSTEMD)
        p.note(f"{directory}: taken {manifest.created} on {manifest.swarm.taken_on}; restoring on {target.name}")
    with session.phase("restore-swarm", f"the swarm state back on {target.name}, re-formed from it") as p:
        archive = (directory / manifest.swarm.file.path).read_bytes()
        session.executor().execute(plan_swarm_restore(target, archive, systemd, directory.name), p)
    return target
