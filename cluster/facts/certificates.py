"""Swarm certificates: each node's own (the TLS certificate the swarm's CA issued it, which it renews
only while it is up and reaches a manager) and the swarm's root CA. Both are PEM text read as it is
and parsed here with `cryptography`, so the nodes need no openssl.

A node off past its certificate's expiry cannot rejoin by itself (moby/moby#24132): `fab recover`
makes it leave and join again (cluster/plans/recover.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID

from cluster.facts import Fact
from topology import SWARM_DIR

NODE_CERTIFICATE_PATH = f"{SWARM_DIR}/certificates/swarm-node.crt"
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Certificate:
    """What status and recover need of a certificate. A node's: common name = its node ID, unit =
    swarm-manager | swarm-worker, organisation = the swarm's cluster ID; the root CA's: CN swarm-ca."""

    common_name: str
    unit: str
    organisation: str
    not_after: datetime  # UTC

    def expired(self, now: datetime) -> bool:
        return self.not_after <= now

    def days_left(self, now: datetime) -> int:
        """Whole days until it expires (0 on its last day; negative once expired)."""
        return math.floor((self.not_after - now) / DAY)


def _name(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def parse_certificate(output: str) -> Certificate | None:
    """The first certificate of PEM text (a node's file holds its own first, then any intermediate);
    None when there is none (the node is in no swarm). Text that is not PEM raises ValueError."""
    if "-----BEGIN CERTIFICATE-----" not in output:
        if output.strip():
            raise ValueError(f"not a PEM certificate: {output.strip()[:80]!r}")
        return None
    first = x509.load_pem_x509_certificates(output.encode())[0]
    subject = first.subject
    return Certificate(
        common_name=_name(subject, NameOID.COMMON_NAME),
        unit=_name(subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        organisation=_name(subject, NameOID.ORGANIZATION_NAME),
        not_after=first.not_valid_after_utc,
    )


# Empty output (not an error) where the node holds no swarm certificate; as root, as the runner is.
NODE_CERTIFICATE = Fact(f"test ! -e {NODE_CERTIFICATE_PATH} || cat {NODE_CERTIFICATE_PATH}", parse_certificate)
# On a manager with a leader: the root CA certificate the swarm trusts (Swarm.Cluster.TLSInfo.TrustRoot).
ROOT_CA = Fact("docker swarm ca", parse_certificate)


@dataclass(frozen=True)
class NodeCertificate:
    """One node's certificate, or why it could not be read (the node does not answer...)."""

    name: str
    certificate: Certificate | None = None
    problem: str = ""
