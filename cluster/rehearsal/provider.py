"""`--target rehearsal`: the Pulumi provider's code, with a stand-in for the Pulumi CLI.

Everything but the command that prints the stack's inventory output is PulumiProvider's: the storage
node debootstraps the base image itself, no image cache, machines brought back by their owner (here:
`docker start`, as a cloud's console would). The stand-in prints the inventory the Pulumi program
exported under mocks when `fab rehearsal-up` made the nodes (cluster.rehearsal.stack)."""

from __future__ import annotations

import sys

from cluster.providers.pulumi import PulumiProvider

NAME = "rehearsal"


class RehearsalProvider(PulumiProvider):
    name = NAME
    restore_hint = "start its container again (`docker start`), as a cloud's console starts a stopped server"
    stack_output_command = (sys.executable, "-m", "cluster.rehearsal.stack", "output", "inventory", "--json")
