"""`--target rehearsal`: the Pulumi provider's code, with a stand-in for the Pulumi CLI.

Two things differ from PulumiProvider: the command that prints the stack's inventory output (the
stand-in prints the inventory the Pulumi program exported under mocks when `fab rehearsal-up` made
the nodes, cluster.lab.rehearsal.stack), and `fab recover` starting a stopped node again, as a cloud's
console starts a stopped server. The rest is PulumiProvider's: the storage node debootstraps the
base image itself, and there is no image cache."""

from __future__ import annotations

import sys

from cluster.config import Config
from cluster.executor import Executor
from cluster.inventory import Node
from cluster.progress import PhaseResult
from cluster.providers.pulumi import PulumiProvider

NAME = "rehearsal"


class RehearsalProvider(PulumiProvider):
    name = NAME
    stack_output_command = (sys.executable, "-m", "cluster.lab.rehearsal.stack", "output", "inventory", "--json")

    def restore_node(self, config: Config, node: Node, executor: Executor, progress: PhaseResult) -> bool:
        """A stopped server started again, as a cloud's console does (`fab recover`); the only place the
        rehearsal departs from PulumiProvider besides the stand-in (which says what to do instead)."""
        from cluster.lab.rehearsal.nodes import start_node  # the local engine, only when a node is lost

        return start_node(config, node, executor, progress)
