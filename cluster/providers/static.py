"""Machines you already have, described by an inventory file you write (`"provider": "static"`)."""

from __future__ import annotations

from pathlib import Path

from cluster.config import Config
from cluster.inventory import Inventory, load_inventory
from cluster.providers.base import BaseImageOnStorage, MachinesByTheirOwner, RebootOverSsh


class StaticProvider(BaseImageOnStorage, MachinesByTheirOwner, RebootOverSsh):
    name = "static"

    def inventory(self, config: Config, target: str) -> Inventory:
        return load_inventory(Path(target).expanduser())
