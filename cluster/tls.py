"""The cluster's own certificate authority and the certificates it issues (HAProxy's, the registry's).

Made with `cryptography` on the operator's machine and kept in the cluster's state directory
(`tls/`, keys mode 600); only a certificate and its own key ever leave it, each to the node that
serves it. The CA is name-constrained to the cluster's addresses (and the lab's `localhost`), so even
a user who trusts it system-wide trusts it for this cluster only. A user's own certificate can take
HAProxy's place (tls_cert and tls_key in swarmlab.yaml); the registry always uses the cluster CA.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.errors import ConfigError, ConfigErrors
from cluster.inventory import Inventory
from cluster.progress import PhaseResult
from cluster.state import write_private

CA_DAYS = 3650
LEAF_DAYS = 397
RENEW_BEFORE = datetime.timedelta(days=30)
# Permitted DNS names when the cluster has none: a reserved name (RFC 6761) nothing resolves, so the
# CA cannot vouch for any real name (an IP-only constraint would leave DNS names unconstrained).
NO_DNS = "invalid"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Scope:
    """What the CA may vouch for: networks and DNS names (X.509 name constraints)."""

    networks: tuple[IPNetwork, ...]
    names: tuple[str, ...]

    @classmethod
    def of(cls, networks: Iterable[IPNetwork], names: Iterable[str]) -> Scope:
        return cls(tuple(sorted(set(networks), key=str)), tuple(sorted(set(names))) or (NO_DNS,))


@dataclass(frozen=True)
class Authority:
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class Certificate:
    """A server certificate (with its chain, leaf first) and its key, in PEM."""

    chain_pem: bytes
    key_pem: bytes

    @property
    def bundle(self) -> bytes:
        """What HAProxy's `crt` file holds: the chain, then the key."""
        return self.chain_pem + self.key_pem

    @property
    def sha256(self) -> str:
        """Of the bundle: it changes whenever a certificate or key does (and tells nothing of the key)."""
        return hashlib.sha256(self.bundle).hexdigest()

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: what browsers, curl, Go (the registry, Docker) and HAProxy's OpenSSL all take.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _constraints(scope: Scope) -> x509.NameConstraints:
    permitted: list[x509.GeneralName] = [x509.IPAddress(n) for n in scope.networks]
    permitted += [x509.DNSName(name) for name in scope.names]
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def new_authority(cluster: str, scope: Scope) -> Authority:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"swarmlab {cluster} CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_constraints(scope), critical=True)
        # Server certificates only: OpenSSL and Go refuse a chain whose CA lists EKUs without the one
        # asked for, so even a leaked key cannot make a client (or code-signing) certificate they accept.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert.public_bytes(serialization.Encoding.PEM), key)


def scope_of(authority: Authority) -> Scope | None:
    try:
        constraints = authority.certificate.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    subtrees = list(constraints.permitted_subtrees or [])
    networks = [s.value for s in subtrees if isinstance(s, x509.IPAddress)]
    names = [s.value for s in subtrees if isinstance(s, x509.DNSName)]
    return Scope.of(networks, names)  # type: ignore[arg-type]  # IPAddress holds networks in constraints


def issue(authority: Authority, addresses: Iterable[IPAddress], names: Iterable[str]) -> Certificate:
    """A server certificate for these addresses and names, signed by the authority."""
    addresses, names = sorted(set(addresses), key=str), sorted(set(names))
    key = _new_key()
    # No common name without a DNS name: OpenSSL checks a CN as a host name against the CA's DNS
    # constraints, and an address there fails them. An empty subject needs a critical SAN (RFC 5280).
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if names else [])
    now = _now()
    ca = authority.certificate
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([*(x509.IPAddress(a) for a in addresses), *(x509.DNSName(n) for n in names)]),
            critical=not names,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    return Certificate(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _names_of(cert: x509.Certificate) -> tuple[set[IPAddress], set[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    addresses = {a for a in san.get_values_for_type(x509.IPAddress) if isinstance(a, IPAddress)}
    return addresses, set(san.get_values_for_type(x509.DNSName))


def certificate_names(cert: Certificate) -> list[str]:
    """What a certificate vouches for (its subject alternative names), for messages."""
    addresses, names = _names_of(cert.leaf)
    return sorted([*(str(a) for a in addresses), *names])


def _current(cert: Certificate, authority: Authority, addresses: set[IPAddress], names: set[str]) -> bool:
    leaf = cert.leaf
    return (
        leaf.issuer == authority.certificate.subject
        and _signed_by(leaf, authority)
        and leaf.not_valid_after_utc - _now() > RENEW_BEFORE
        and _names_of(leaf) == (addresses, names)
    )


def _signed_by(leaf: x509.Certificate, authority: Authority) -> bool:
    try:
        leaf.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class ClusterTLS:
    """The CA and certificates kept in a cluster's `tls/` directory, made or renewed only when needed,
    so that a second run writes nothing and reloads nothing."""

    def __init__(self, directory: Path, cluster: str, write: bool = True) -> None:
        self.directory = directory
        self.cluster = cluster
        self.write = write  # a dry run makes what it needs in memory and writes nothing

    def _keep(self, path: Path, data: bytes) -> None:
        if self.write:
            write_private(path, data)

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    def authority(self, scope: Scope, progress: PhaseResult) -> Authority:
        """The cluster's CA; a new one when there is none, or when it was made for other addresses."""
        cert_path, key_path = self.ca_path, self.directory / "ca.key"
        if cert_path.is_file() and key_path.is_file():
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                found = Authority(cert_path.read_bytes(), key)
                if scope_of(found) == scope and found.certificate.not_valid_after_utc - _now() > RENEW_BEFORE:
                    return found
            progress.note(f"the cluster CA in {cert_path} was made for other addresses (or expires): making a new one")
        made = new_authority(self.cluster, scope)
        self._keep(key_path, _key_pem(made.key))
        self._keep(cert_path, made.cert_pem)
        if self.write:
            progress.note(f"made the cluster CA {cert_path}: trust it to reach the cluster (curl --cacert {cert_path})")
        else:
            progress.note(f"would make the cluster CA {cert_path} (dry run: made in memory only)")
        return made

    def certificate(
        self, name: str, authority: Authority, addresses: Iterable[IPAddress], names: Iterable[str]
    ) -> Certificate:
        """tls/<name>.crt and .key: kept while current (same CA, same names, not expiring), else issued."""
        wanted_addresses, wanted_names = set(addresses), set(names)
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        if cert_path.is_file() and key_path.is_file():
            found = Certificate(cert_path.read_bytes(), key_path.read_bytes())
            if _current(found, authority, wanted_addresses, wanted_names):
                return found
        made = issue(authority, wanted_addresses, wanted_names)
        self._keep(key_path, made.key_pem)
        self._keep(cert_path, made.chain_pem)
        return made


def user_certificate(cert_path: Path, key_path: Path) -> Certificate:
    """The user's own certificate chain and key (tls_cert, tls_key), checked to belong together."""
    problems: list[ConfigError] = []
    chain: list[x509.Certificate] = []
    key = None
    try:
        chain = x509.load_pem_x509_certificates(cert_path.expanduser().read_bytes())
    except (OSError, ValueError) as error:
        problems.append(
            ConfigError(
                "tls_cert",
                str(cert_path),
                f"is not a readable PEM certificate chain ({error})",
                "point it at your fullchain.pem",
            )
        )
    try:
        key = serialization.load_pem_private_key(key_path.expanduser().read_bytes(), None)
    except (OSError, ValueError, TypeError) as error:
        problems.append(
            ConfigError(
                "tls_key",
                str(key_path),
                f"is not a readable, unencrypted PEM key ({error})",
                "point it at the certificate's key",
            )
        )
    if not problems and key is not None and chain[0].public_key() != key.public_key():
        problems.append(
            ConfigError(
                "tls_key",
                str(key_path),
                f"is not the key of {cert_path}'s first certificate",
                "use the key the certificate was issued for",
            )
        )
    if problems:
        raise ConfigErrors(problems)
    assert key is not None
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return Certificate(
        pem,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def public_addresses(inventory: Inventory) -> set[IPAddress]:
    """Where the users and the operator reach the lbs: each lb's public address and the HTTP endpoint's
    host when it is an address (with two lbs on a cloud, the VIP's floating IP, which no lb has as its own)."""
    found: set[IPAddress] = {n.public_ip for n in inventory.lbs if n.public_ip is not None}
    host = urlsplit(inventory.endpoints.http).hostname or ""
    with contextlib.suppress(ValueError):
        found.add(ipaddress.ip_address(host))
    return found


def cluster_scope(inventory: Inventory, names: Iterable[str]) -> Scope:
    """What the cluster CA may vouch for: the node network, the lb node's public address, the DNS
    names of tls_names, `localhost` where the lb is published on loopback (the lab), and the
    registry's host when the inventory names it outside the node network."""
    networks: list[IPNetwork] = [inventory.network.cidr]
    dns = list(names)
    public = inventory.lb.public_ip
    networks += [ipaddress.ip_network(a) for a in sorted(public_addresses(inventory), key=str)]
    dns += ["localhost"] if public is not None and public.is_loopback else []
    host = (inventory.registry or "").rpartition(":")[0]
    if host:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            dns.append(host)
        else:
            networks += [] if address in inventory.network.cidr else [ipaddress.ip_network(address)]
    return Scope.of(networks, dns)


def lb_names(inventory: Inventory, names: Iterable[str]) -> tuple[set[IPAddress], set[str]]:
    """The addresses and names on HAProxy's certificate: the lb node's public and private address (with
    two lbs, both lbs' and the virtual IP they share: the same certificate serves on either)."""
    lb = inventory.lb
    addresses: set[IPAddress] = {*(n.private_ip for n in inventory.lbs), *public_addresses(inventory)}
    if inventory.network.vip is not None:
        addresses.add(inventory.network.vip)
    loopback = lb.public_ip is not None and lb.public_ip.is_loopback
    return addresses, {*names, *(["localhost"] if loopback else [])}
