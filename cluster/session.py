"""What every task works with: the configuration, the provider and inventory of its target, the
runner that reaches the nodes, whether this is a dry run, and the phases the run went through (its
outcome: what the caller prints as the timing table and the result line)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from cluster.config import Config
from cluster.executor import Executor
from cluster.inventory import Inventory
from cluster.progress import PhaseResult, Timings
from cluster.providers import resolve
from cluster.providers.base import Provider
from cluster.runners import Runner, SshRunner
from cluster.state import StatePaths


@dataclass
class Session:
    config: Config
    provider: Provider
    runner: Runner
    dry_run: bool = False
    timings: Timings = field(default_factory=Timings)

    @property
    def inventory(self) -> Inventory:
        return self.runner.inventory

    @property
    def state(self) -> StatePaths:
        """This target's state directory: its provider's and its cluster's (credentials, CA)."""
        return self.config.state(provider=self.provider.name, cluster=self.inventory.cluster)

    def executor(self, secrets: Mapping[str, str] | None = None) -> Executor:
        return Executor(self.runner, dry_run=self.dry_run, secrets=secrets)

    def phase(self, name: str, description: str) -> AbstractContextManager[PhaseResult]:
        """A timed phase of this run, recorded in its timings."""
        return self.timings.phase(name, description)


@contextmanager
def open_session(
    config: Config, target: str, dry_run: bool = False, timings: Timings | None = None
) -> Iterator[Session]:
    """A session on `target`; its phases go to `timings` when given (a run that began before it, as
    the demo's lab-up), else to a Timings of its own."""
    provider, inventory = resolve(target, config)
    nodes = SshRunner(inventory)
    try:
        yield Session(config, provider, nodes, dry_run, timings if timings is not None else Timings())
    finally:
        nodes.close()
