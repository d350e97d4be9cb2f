"""Where the machines come from: the lab, a Pulumi stack, or an inventory file the user wrote."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cluster.config import Config
from cluster.errors import SwarmlabError, tail
from cluster.inventory import Inventory, load_inventory, parse_inventory


def resolve(target: str, config: Config) -> Inventory:
    if target == "lab":
        path = config.state_path / "inventory.json"
        if not path.exists():
            raise SwarmlabError(f"lab {config.cluster!r} is not up (no {path}): run `fab lab-up` first")
        return load_inventory(path)
    if target == "pulumi":
        if shutil.which("pulumi") is None:
            raise SwarmlabError("--target pulumi needs the Pulumi CLI on PATH (see docs/cloud.md)")
        command = ["pulumi", "stack", "output", "inventory", "--json", "--show-secrets"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SwarmlabError(f"on localhost: `{' '.join(command)}` failed:\n{tail(done.stderr)}")
        return parse_inventory(done.stdout, "pulumi stack output inventory")
    return load_inventory(Path(target))
