"""What every task works with: the configuration, the provider and inventory of its target, the
runner that reaches the nodes, and whether this is a dry run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from cluster.config import Config
from cluster.executor import Executor
from cluster.inventory import Inventory
from cluster.providers import resolve
from cluster.providers.base import Provider
from cluster.runners import Nodes, Runner
from cluster.state import StatePaths


@dataclass
class Session:
    config: Config
    provider: Provider
    runner: Runner
    dry_run: bool = False

    @property
    def inventory(self) -> Inventory:
        return self.runner.inventory

    @property
    def state(self) -> StatePaths:
        """This target's state directory: its provider's and its cluster's (credentials, CA)."""
        return self.config.state(provider=self.provider.name, cluster=self.inventory.cluster)

    def executor(self, secrets: Mapping[str, str] | None = None) -> Executor:
        return Executor(self.runner, dry_run=self.dry_run, secrets=secrets)


@contextmanager
def open_session(config: Config, target: str, dry_run: bool = False) -> Iterator[Session]:
    provider, inventory = resolve(target, config)
    nodes = Nodes(inventory)
    try:
        yield Session(config, provider, nodes, dry_run)
    finally:
        nodes.close()
