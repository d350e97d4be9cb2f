"""An OpenStack cluster made by the Pulumi program (infra/): its inventory is a stack output."""

from __future__ import annotations

import shutil

from cluster.config import Config
from cluster.errors import SwarmlabError
from cluster.inventory import Inventory, parse_inventory
from cluster.local import run_local
from cluster.providers.base import BaseImageOnStorage, MachinesByTheirOwner


class PulumiProvider(BaseImageOnStorage, MachinesByTheirOwner):
    name = "pulumi"
    restore_hint = "run `pulumi up` first (it re-creates the lost server at the same address)"

    def inventory(self, config: Config, target: str) -> Inventory:
        if shutil.which("pulumi") is None:
            raise SwarmlabError("--target pulumi needs the Pulumi CLI on PATH (see docs/cloud.md)")
        output = run_local(["pulumi", "stack", "output", "inventory", "--json", "--show-secrets"])
        return parse_inventory(output, "pulumi stack output inventory")
