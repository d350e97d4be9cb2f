"""Where the machines come from, side by side behind one small interface (base.Provider).

The registry maps a target name to the module and class that serve it; a module is imported only
when its target is used, so the cloud and static paths never load the lab (nor need a local
Docker engine). A new provider is one new module and one line here. Any other target is the path of
an inventory file (the static provider).
"""

from __future__ import annotations

import importlib

from cluster.config import Config
from cluster.inventory import Inventory
from cluster.providers.base import Provider

PROVIDERS: dict[str, str] = {
    "lab": "cluster.lab.provider:LabProvider",
    "pulumi": "cluster.providers.pulumi:PulumiProvider",
    "static": "cluster.providers.static:StaticProvider",
    # The Pulumi provider on nodes that boot like cloud VMs here (docs/cloud.md, "The rehearsal").
    "rehearsal": "cluster.rehearsal.provider:RehearsalProvider",
}
FILE_PROVIDER = "static"


def provider_named(name: str) -> Provider:
    module_name, _, class_name = PROVIDERS[name].partition(":")
    provider: Provider = getattr(importlib.import_module(module_name), class_name)()
    return provider


def resolve(target: str, config: Config) -> tuple[Provider, Inventory]:
    """The provider serving `target` and the inventory it reads ("lab", "pulumi", or a file's path)."""
    name = target if target in PROVIDERS and target != FILE_PROVIDER else FILE_PROVIDER
    provider = provider_named(name)
    return provider, provider.inventory(config, target)
