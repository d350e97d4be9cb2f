"""Where the machines come from, side by side behind one small interface (base.Provider).

PROVIDER_CLASSES maps a target name to the module and class that serve it; a module is imported only
when its target is used, so the cloud and static paths never load the lab (nor need a local
Docker engine). A new provider is one new module and one line here. Any other target is the path of
an inventory file (the static provider). The lab's own tasks (lab-up, lab-down, lab-status) reach the
lab here too (lab_provider): nothing else imports cluster.lab (a contract in pyproject.toml).
"""

from __future__ import annotations

import importlib

from cluster.config import Config
from cluster.errors import SwarmlabError
from cluster.inventory import Inventory
from cluster.providers.base import LabTasks, Provider

PROVIDER_CLASSES: dict[str, str] = {
    "lab": "cluster.lab.provider:LabProvider",
    "pulumi": "cluster.providers.pulumi:PulumiProvider",
    "static": "cluster.providers.static:StaticProvider",
    # The Pulumi provider on nodes that boot like cloud VMs here (docs/cloud.md, "The rehearsal").
    "rehearsal": "cluster.lab.rehearsal.provider:RehearsalProvider",
}
FILE_PROVIDER = "static"


def provider_named(name: str) -> Provider:
    module_name, _, class_name = PROVIDER_CLASSES[name].partition(":")
    provider: Provider = getattr(importlib.import_module(module_name), class_name)()
    return provider


def lab_provider() -> LabTasks:
    """The lab's provider, with its own tasks (up, down, status_rows, image_caches)."""
    provider = provider_named("lab")
    if not isinstance(provider, LabTasks):
        raise SwarmlabError(f"{PROVIDER_CLASSES['lab']} has no lab tasks (up, down, status_rows, image_caches)")
    return provider


def resolve(target: str, config: Config) -> tuple[Provider, Inventory]:
    """The provider serving `target` and the inventory it reads ("lab", "pulumi", or a file's path)."""
    name = target if target in PROVIDER_CLASSES and target != FILE_PROVIDER else FILE_PROVIDER
    provider = provider_named(name)
    return provider, provider.inventory(config, target)
