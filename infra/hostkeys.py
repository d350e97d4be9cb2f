"""Each node's SSH host key, made by the program so that it can be pinned before the node exists.

pulumi-tls keeps each private key in the stack's state as a secret (encrypted with the stack's
secrets provider) and stable across `pulumi up`; only cloud-init user data (a secret input) carries
it to its node. The public halves go into the inventory, so the Fabric tasks trust nothing on first
use.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from infra.layout import NodeSpec


@dataclass(frozen=True)
class HostKey:
    """One node's host key as its user data needs it (the private half is a secret Output)."""

    private_openssh: pulumi.Output[str]
    public_openssh: pulumi.Output[str]


class HostKeys(pulumi.ComponentResource):
    keys: dict[str, HostKey]

    def __init__(self, name: str, nodes: tuple[NodeSpec, ...], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("swarmlab:hostkeys:HostKeys", name, None, opts)
        self.keys = {}
        for node in nodes:
            key = tls.PrivateKey(f"{node.name}-host-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self))
            self.keys[node.name] = HostKey(
                # pulumi-tls marks it secret already; said again here so that nothing derived from it
                # (the user data) can ever be a plain value, whatever the provider does.
                private_openssh=pulumi.Output.secret(key.private_key_openssh),
                # "ssh-ed25519 AAAA...\n": the line without its newline.
                public_openssh=key.public_key_openssh.apply(lambda text: text.strip()),
            )
        self.register_outputs({name: key.public_openssh for name, key in self.keys.items()})

    def public_keys(self) -> pulumi.Output[dict[str, str]]:
        """Node name -> "ssh-ed25519 AAAA...": what the inventory pins."""
        names = list(self.keys)
        return pulumi.Output.all(*(self.keys[n].public_openssh for n in names)).apply(
            lambda keys: dict(zip(names, keys, strict=True))
        )
