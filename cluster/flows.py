"""Flows: the long sequences (bootstrap, deploy-stack, demo, recover, restore --swarm) as ordered tuples
of named steps, each step one task, kept above the tasks so that no task calls another (as the lab's
creation is CREATE_ACTIONS in cluster/lab/provider.py). A flow lists each phase once: reading one
top to bottom is reading what the run does, in order.

The steps share a FlowState: the session, the workload, and what earlier steps found (the leader, the
images, the deployed stack, the nodes brought back). A step needed only sometimes says when.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cluster.errors import SwarmlabError
from cluster.inventory import Node
from cluster.plans.clustermap import map_images
from cluster.plans.recover import Rejoined
from cluster.progress import Timings
from cluster.reads import find_leader
from cluster.session import Session
from cluster.tasks import (
    autolock,
    backup,
    clustermap,
    converge,
    deploy,
    haproxy,
    images,
    isolation,
    keepalived,
    nfs,
    prune,
    recover,
    registry,
    revisions,
    swarm,
)
from cluster.workload import Workload


@dataclass
class FlowState:
    """One run of a flow: its session, its inputs, and what its steps found so far."""

    session: Session
    workload: Workload | None = None
    backup_dir: str = ""  # restore --swarm: the backup to restore ('' for the newest)
    rollback_to: int | None = None  # rollback-stack: the revision to deploy again (None: the one before)
    leader: Node | None = None
    reformed: bool = False
    images: dict[str, str] = field(default_factory=dict)
    map_image: str = ""
    deployed: deploy.DeployedStack | None = None
    rejoined: Rejoined | None = None
    unlocked: list[str] = field(default_factory=list)  # managers the unlock step unlocked

    @property
    def timings(self) -> Timings:
        return self.session.timings

    def the_leader(self) -> Node:
        if self.leader is None:
            raise SwarmlabError("this flow needs a step that finds the leader before this one (cluster/flows.py)")
        return self.leader

    def the_workload(self) -> Workload:
        if self.workload is None:
            raise SwarmlabError("this flow deploys a workload and was given none (cluster/flows.py)")
        return self.workload

    def the_deployed(self) -> deploy.DeployedStack:
        if self.deployed is None:
            raise SwarmlabError("prune runs after deploy-stack in a flow (cluster/flows.py)")
        return self.deployed


def _always(state: FlowState) -> bool:
    return True


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[FlowState], None]
    when: Callable[[FlowState], bool] = _always


Flow = tuple[Step, ...]


def run(
    flow: Flow,
    session: Session,
    workload: Workload | None = None,
    backup_dir: str = "",
    rollback_to: int | None = None,
) -> FlowState:
    """Each step of `flow` in order (those whose `when` holds); the state holds what they found, and
    its timings the phases they went through."""
    state = FlowState(session, workload, backup_dir, rollback_to)
    for step in flow:
        if step.when(state):
            step.run(state)
    return state


# --- steps: each one task, its inputs from the state, its result into it ------------------------------


def _find_leader(state: FlowState) -> None:
    state.leader = find_leader(state.session.runner)


def _swarm_init(state: FlowState) -> None:
    state.leader = swarm.swarm_init(state.session)


def _swarm_join(state: FlowState) -> None:
    swarm.swarm_join(state.session, state.the_leader())


def _drain_managers(state: FlowState) -> None:
    swarm.drain_managers(state.session, state.the_leader())


def _unlock(state: FlowState) -> None:
    state.unlocked = autolock.unlock_managers(state.session)


def _autolock(state: FlowState) -> None:
    autolock.set_autolock(state.session, state.the_leader())


def _haproxy(state: FlowState) -> None:
    haproxy.configure_haproxy(state.session, state.the_leader(), also=state.workload)


def _keepalived(state: FlowState) -> None:
    keepalived.configure_keepalived(state.session)


def _two_lbs(state: FlowState) -> bool:
    # keepalived runs on a pair of lbs only: with one there is no VIP to hold.
    return state.session.inventory.lb_pair


def _nfs(state: FlowState) -> None:
    nfs.configure_nfs(state.session)


def _isolation(state: FlowState) -> None:
    isolation.isolate(state.session)


def _registry(state: FlowState) -> None:
    registry.configure_registry(state.session)


def _build_images(state: FlowState) -> None:
    state.images = images.build_images(state.session, state.the_workload())


def _stack_owner(state: FlowState) -> None:
    deploy.check_owner(state.session, state.the_workload(), state.the_leader())


def _deploy_stack(state: FlowState) -> None:
    """Inputs, then the deploy, recorded as the stack's next revision (ok or failed)."""
    session, workload, leader = state.session, state.the_workload(), state.the_leader()
    prepared = deploy.prepare_stack(session, workload, leader, state.images)
    state.deployed = done = prepared.deployed
    with revisions.recording(
        session,
        stack=workload.name,
        environment=workload.environment,
        values=workload.values,
        secrets=done.secrets,
        configs=done.configs,
        rendered=prepared.rendered,
    ):
        deploy.deploy_rendered(session, workload.name, leader, prepared.rendered)


def _rollback_stack(state: FlowState) -> None:
    """A recorded revision's stack file deployed again, recorded as a new revision; HAProxy and the
    prune after it then see the revision's values and versions."""
    session, workload, leader = state.session, state.the_workload(), state.the_leader()
    chosen = revisions.chosen_revision(session, workload.name, state.rollback_to, leader)
    state.workload = replace(workload, values=chosen.values)
    state.deployed = deploy.DeployedStack("", chosen.secrets, chosen.configs)
    with revisions.recording(
        session,
        stack=workload.name,
        environment=chosen.environment,
        values=chosen.values,
        secrets=chosen.secrets,
        configs=chosen.configs,
        rendered=chosen.rendered,
        rollback_of=chosen.number,
    ):
        deploy.deploy_rendered(session, workload.name, leader, chosen.rendered)


def _prune(state: FlowState) -> None:
    deployed = state.the_deployed()
    prune.prune_unused(
        state.session, state.the_workload(), state.the_leader(), deployed.secrets, list(deployed.configs.values())
    )


def _map_image(state: FlowState) -> None:
    state.map_image = images.build_images(state.session, map_images(state.session.config.environment))["clustermap"]


def _stack_and_map_images(state: FlowState) -> None:
    """The stack's images and the map's in one build-images phase (one registry check, one wait)."""
    built = images.build_images(state.session, state.the_workload(), map_images(state.session.config.environment))
    state.map_image = built.pop("clustermap")
    state.images = built


def _cluster_map(state: FlowState) -> None:
    clustermap.deploy_map(state.session, state.map_image)


def _reform_quorum(state: FlowState) -> None:
    state.leader, state.reformed = recover.reform_quorum(state.session, unlocked=state.unlocked)


def _bring_back_managers(state: FlowState) -> None:
    state.rejoined = recover.bring_back_managers(state.session, state.the_leader(), state.reformed)


def _bring_back_expired(state: FlowState) -> None:
    found = recover.bring_back_expired(state.session, state.the_leader())
    state.rejoined = found if state.rejoined is None else state.rejoined.then(found)


def _restore_swarm(state: FlowState) -> None:
    state.leader = backup.restore_swarm(state.session, state.backup_dir)


def _bring_back_members(state: FlowState) -> None:
    state.rejoined = recover.bring_back_members(state.session, state.the_leader())


def _converge(state: FlowState) -> None:
    converge.converge(state.session, state.the_leader())


def _missing_nodes(state: FlowState) -> None:
    if state.rejoined is not None:
        state.rejoined.raise_if_missing()


def _rejoined(state: FlowState) -> bool:
    """Nodes were brought back (not a dry run that stopped before): the cluster settles after them."""
    return state.rejoined is not None


def _engines_recreated(state: FlowState) -> bool:
    """A re-created node's engine is new: it must trust the cluster registry again."""
    return state.rejoined is not None and bool(state.rejoined.restored)


# --- the flows -------------------------------------------------------------------------------------------

LEADER = Step("leader", _find_leader)
# Before anything reads the swarm: a locked manager looks like one in no swarm (autolock).
UNLOCK = Step("unlock", _unlock)
AUTOLOCK = Step("autolock", _autolock)
SWARM_INIT = Step("swarm-init", _swarm_init)
SWARM_JOIN = Step("swarm-join", _swarm_join)
DRAIN_MANAGERS = Step("drain-managers", _drain_managers)
HAPROXY_STEP = Step("haproxy", _haproxy)
# A pair of lbs only, after HAProxy: keepalived's check asks HAProxy, so the VIP goes to an lb that serves.
KEEPALIVED_STEP = Step("keepalived", _keepalived, when=_two_lbs)
NFS = Step("nfs", _nfs)
REGISTRY = Step("registry", _registry)  # before every build: builds push over TLS to it
ISOLATION = Step("isolation", _isolation)  # the engines' DOCKER-USER rules (cloud-init and the lab put them first)
BUILD_IMAGES_STEP = Step("build-images", _build_images)
# Before anything changes: a stack another state directory (other credentials) deployed is refused.
STACK_OWNER = Step("stack-owner", _stack_owner)
DEPLOY = Step("deploy-stack", _deploy_stack)  # stack-inputs, deploy-stack; records a revision
PRUNE = Step("prune", _prune)  # prune-secrets, prune-configs: after HAProxy routes the new versions
MAP_IMAGE = Step("build-images", _map_image)
CLUSTER_MAP = Step("cluster-map", _cluster_map)
# After nodes came back: registry trust for re-created engines, the isolation rules on every engine
# (a restarted machine's kernel lost them unless its engine's start put them back), managers drained,
# every service running; then the nodes that did not come back, as an error.
SETTLE: Flow = (
    Step("autolock", _autolock, when=_rejoined),  # a swarm restored from a backup comes back without it
    Step("registry", _registry, when=_engines_recreated),
    Step("isolation", _isolation, when=_rejoined),
    Step("drain-managers", _drain_managers, when=_rejoined),
    Step("converge", _converge, when=_rejoined),
    Step("missing-nodes", _missing_nodes, when=_rejoined),
)

BOOTSTRAP: Flow = (
    UNLOCK,
    SWARM_INIT,
    SWARM_JOIN,
    AUTOLOCK,
    DRAIN_MANAGERS,
    HAPROXY_STEP,
    KEEPALIVED_STEP,
    NFS,
    REGISTRY,
    ISOLATION,
)
UNLOCK_MANAGERS: Flow = (UNLOCK,)
ROTATE_UNLOCK_KEY: Flow = (Step("rotate-unlock-key", lambda state: autolock.rotate_unlock_key(state.session)),)
ISOLATE: Flow = (ISOLATION,)
HAPROXY: Flow = (LEADER, HAPROXY_STEP)
KEEPALIVED: Flow = (Step("keepalived", _keepalived),)  # `fab keepalived`: says so with one lb
BUILD_IMAGES: Flow = (REGISTRY, BUILD_IMAGES_STEP)
DEPLOY_STACK: Flow = (LEADER, STACK_OWNER, REGISTRY, BUILD_IMAGES_STEP, DEPLOY, HAPROXY_STEP, PRUNE)
# A recorded revision again: no build (its images are in the registry), its values for HAProxy's routes.
ROLLBACK_STACK: Flow = (LEADER, STACK_OWNER, Step("rollback-stack", _rollback_stack), HAPROXY_STEP, PRUNE)
DEPLOY_MAP: Flow = (REGISTRY, MAP_IMAGE, CLUSTER_MAP)
# The whole path after lab-up: bootstrap already configured the registry, and its HAProxy already
# routes the configured stack (the one the demo deploys), so neither runs again.
# The map's image is built with the stack's.
DEMO: Flow = (*BOOTSTRAP, STACK_OWNER, Step("build-images", _stack_and_map_images), DEPLOY, PRUNE, CLUSTER_MAP)
# The cloud path on the rehearsal: as bootstrap then deploy-stack (bootstrap's HAProxy already routes
# the stack being deployed, and its registry is configured).
REHEARSAL: Flow = (*BOOTSTRAP, STACK_OWNER, BUILD_IMAGES_STEP, DEPLOY, PRUNE)
RECOVER: Flow = (
    UNLOCK,
    Step("recover-quorum", _reform_quorum),
    Step("restore-managers", _bring_back_managers),
    Step("restore-expired", _bring_back_expired),
    *SETTLE,
)
RESTORE_SWARM: Flow = (Step("restore-swarm", _restore_swarm), Step("restore-members", _bring_back_members), *SETTLE)
