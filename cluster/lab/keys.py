"""SSH keys of a lab: one client key pair per lab and one pinned host key per node."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private_openssh: bytes
    public_openssh: str  # "ssh-ed25519 AAAA..."


def new_key_pair(comment: str) -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(private, f"{public.decode()} {comment}")


def host_entry(host: str, port: int) -> str:
    """The name a known_hosts line gives a server, as paramiko and OpenSSH look it up ([host]:port when not 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_line(host: str, port: int, public_openssh: str) -> str:
    """A known_hosts entry in the form paramiko and OpenSSH look up ([host]:port when not 22)."""
    key_type, key_data = public_openssh.split()[:2]
    return f"{host_entry(host, port)} {key_type} {key_data}"


def public_of(private_openssh: bytes, comment: str) -> str:
    """The OpenSSH public line of a private key we wrote (the lab's client key, to authorize it again)."""
    key = serialization.load_ssh_private_key(private_openssh, password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} {comment}"
