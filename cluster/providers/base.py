"""What a provider is: it reads the inventory of its machines, and supplies the Debian base image the
cluster's images build FROM (by default the storage node makes it itself with debootstrap)."""

from __future__ import annotations

from typing import Protocol

from cluster.config import Config
from cluster.executor import Executor
from cluster.images import BaseImage
from cluster.inventory import Inventory, Node
from cluster.plans.images import base_present_command, plan_base_on_node
from cluster.progress import PhaseResult


class Provider(Protocol):
    name: str

    def inventory(self, config: Config, target: str) -> Inventory:
        """The machines of `target`, validated (schema v1)."""
        ...

    def supply_base_image(self, executor: Executor, storage: Node, base: BaseImage, progress: PhaseResult) -> None:
        """Make sure the storage node has the base image."""
        ...


class BaseImageOnStorage:
    """The default: the storage node debootstraps the base image itself (Debian's mirror, nothing local)."""

    def supply_base_image(self, executor: Executor, storage: Node, base: BaseImage, progress: PhaseResult) -> None:
        present = executor.runner.run(storage, base_present_command(base)).stdout.strip() == "yes"
        executor.execute(plan_base_on_node(storage.name, base, present), progress)
