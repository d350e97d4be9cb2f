"""What a provider is: it reads the inventory of its machines, supplies the Debian base image the
cluster's images build FROM (by default the storage node makes it itself with debootstrap), and brings
back a lost machine when it can (the lab restarts or re-creates its container; elsewhere the user does),
and reboots a node (the lab restarts its container; elsewhere `systemctl reboot` over SSH)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cluster.config import Config
from cluster.executor import Executor
from cluster.facts import read
from cluster.facts.daemons import BOOT_ID, image_present
from cluster.images import BaseImage
from cluster.inventory import Inventory, Node
from cluster.plans.images import plan_base_on_node
from cluster.plans.maintenance import plan_rebooted, plan_ssh_reboot
from cluster.progress import PhaseResult, Timings


class Provider(Protocol):
    name: str
    # A directory on the storage node that outlives the cluster registry, from which builds fill an
    # empty registry (plans.images.ImageCache); None where the registry itself is what persists.
    image_cache: str | None

    def inventory(self, config: Config, target: str) -> Inventory:
        """The machines of `target`, validated (schema v1)."""
        ...

    def supply_base_image(self, executor: Executor, storage: Node, base: BaseImage, progress: PhaseResult) -> None:
        """Make sure the storage node has the base image."""
        ...

    def restore_node(self, config: Config, node: Node, executor: Executor, progress: PhaseResult) -> bool:
        """Bring back the machine of a node that does not answer (started again, or re-created empty),
        if this provider can; True when it should answer now. `fab recover` calls it."""
        ...

    def reboot_node(self, config: Config, node: Node, executor: Executor, progress: PhaseResult) -> None:
        """Reboot a node's machine and return once it went down and came up again (its SSH connection
        forgotten); that its engine and swarm membership are back is the caller's wait. `fab maintain-nodes`."""
        ...


@runtime_checkable
class LabTasks(Protocol):
    """The lab's own tasks (lab-up, lab-down, lab-status), which only the lab's provider has: the
    fabfile reaches them through the registry (providers.lab_provider), never by importing the lab."""

    def up(self, config: Config, timings: Timings, keep: bool = False) -> Inventory: ...

    def down(self, config: Config, timings: Timings, purge: bool = False, machine_cache: bool = False) -> None: ...

    def status_rows(self, config: Config) -> list[tuple[str, str, str, str]]: ...

    def image_caches(self, config: Config) -> tuple[str | None, str | None]: ...


class BaseImageOnStorage:
    """The default: the storage node debootstraps the base image itself (Debian's mirror, nothing local);
    its registry lives on its own disk, with no image cache beside it."""

    image_cache: str | None = None

    def supply_base_image(self, executor: Executor, storage: Node, base: BaseImage, progress: PhaseResult) -> None:
        present = read(executor.runner, storage, image_present(base.tag))
        executor.execute(plan_base_on_node(storage.name, base, present), progress)


class MachinesByTheirOwner:
    """The default for machines this tool does not make: it can only say what to do."""

    restore_hint = "start it again (or replace it at the same address)"

    def restore_node(self, config: Config, node: Node, executor: Executor, progress: PhaseResult) -> bool:
        progress.note(f"{node.name} does not answer: {self.restore_hint}, then run `fab recover` again")
        return False


class RebootOverSsh:
    """The default for machines with systemd: `systemctl reboot` over SSH, then wait until the node
    answers with another boot id (so a node that has not gone down yet is not taken for one back)."""

    def reboot_node(self, config: Config, node: Node, executor: Executor, progress: PhaseResult) -> None:
        before = read(executor.runner, node, BOOT_ID)
        executor.execute(plan_ssh_reboot(node.name), progress)
        executor.runner.forget(node)  # its connection dies with the machine
        executor.execute(plan_rebooted(node.name, before), progress)
