"""An OpenStack cluster made by the Pulumi program (infra/): its inventory is a stack output."""

from __future__ import annotations

import shutil

from cluster.config import Config
from cluster.errors import SwarmlabError
from cluster.inventory import Inventory, parse_inventory
from cluster.local import run_local
from cluster.providers.base import BaseImageOnStorage, MachinesByTheirOwner, RebootOverSsh

# The stack's inventory output, as the Pulumi CLI prints it (in the project's directory).
STACK_OUTPUT_COMMAND: tuple[str, ...] = ("pulumi", "stack", "output", "inventory", "--json", "--show-secrets")


class PulumiProvider(BaseImageOnStorage, MachinesByTheirOwner, RebootOverSsh):
    name = "pulumi"
    restore_hint = "run `pulumi up` first (it re-creates the lost server at the same address)"
    # What prints the inventory output; the rehearsal puts a stand-in here (cluster.lab.rehearsal.provider).
    stack_output_command: tuple[str, ...] = STACK_OUTPUT_COMMAND

    def inventory(self, config: Config, target: str) -> Inventory:
        command = list(self.stack_output_command)
        if shutil.which(command[0]) is None:
            raise SwarmlabError(f"--target {self.name} needs {command[0]} on PATH (the Pulumi CLI: see docs/cloud.md)")
        output = run_local(command)
        return parse_inventory(output, " ".join(command[:4]))
