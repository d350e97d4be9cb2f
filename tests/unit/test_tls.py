"""The cluster CA and its certificates: made once and kept (a second run issues nothing), renewed
when the names change, name-constrained to the cluster, verified by a real TLS handshake on
loopback; a user's own certificate is checked before use."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import topology
from cluster.config import parse_config
from cluster.errors import ConfigErrors
from cluster.inventory import parse_inventory
from cluster.lab.layout import lab_inventory
from cluster.progress import PhaseResult
from cluster.providers.static import StaticProvider
from cluster.session import Session
from cluster.state import StatePaths
from cluster.tasks.haproxy import configure_haproxy
from cluster.tls import (
    Authority,
    Certificate,
    ClusterTLS,
    Scope,
    cluster_scope,
    issue,
    lb_names,
    scope_of,
    user_certificate,
)
from haproxy.model import CERT_PATH, DAEMON
from tests.unit.fake_runner import FakeRunner
from tests.unit.test_inventory import two_lbs

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def lab_scope() -> Scope:
    return cluster_scope(lab_inventory(parse_config({}), StatePaths(Path("/state"))), [])


def test_the_ca_is_scoped_to_the_cluster() -> None:
    scope = lab_scope()
    assert [str(n) for n in scope.networks] == ["10.20.0.0/24", "127.0.0.1/32"]
    assert scope.names == ("localhost",)
    inventory = lab_inventory(parse_config({}), StatePaths(Path("/state")))
    addresses, names = lb_names(inventory, ["reg.example.org"])
    assert {str(a) for a in addresses} == {"127.0.0.1", "10.20.0.5"} and names == {"reg.example.org", "localhost"}
    # No DNS name at all: the CA is still constrained for DNS, to a name that cannot exist.
    assert Scope.of([ipaddress.ip_network("10.0.0.0/24")], []).names == ("invalid",)


def test_ca_and_certificate_are_made_once_and_kept(tmp_path: Path) -> None:
    progress = PhaseResult("t")
    tls = ClusterTLS(tmp_path / "tls", "demo")
    ca = tls.authority(lab_scope(), progress)
    cert = tls.certificate("haproxy", ca, [LOOPBACK], ["localhost"])
    again = ClusterTLS(tmp_path / "tls", "demo")
    ca2 = again.authority(lab_scope(), progress)
    assert ca2.cert_pem == ca.cert_pem and again.certificate("haproxy", ca2, [LOOPBACK], ["localhost"]) == cert
    for name in ("ca.key", "ca.crt", "haproxy.key", "haproxy.crt"):
        assert stat.S_IMODE((tmp_path / "tls" / name).stat().st_mode) == 0o600, name
    assert scope_of(ca) == lab_scope()
    constraints = ca.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical


def test_other_names_renew_the_certificate_and_another_scope_the_ca(tmp_path: Path) -> None:
    progress = PhaseResult("t")
    tls = ClusterTLS(tmp_path / "tls", "demo")
    ca = tls.authority(lab_scope(), progress)
    first = tls.certificate("haproxy", ca, [LOOPBACK], [])
    assert tls.certificate("haproxy", ca, [LOOPBACK], ["localhost"]) != first
    wider = Scope.of([*lab_scope().networks, ipaddress.ip_network("192.0.2.10/32")], ["localhost"])
    new_ca = tls.authority(wider, progress)
    assert new_ca.cert_pem != ca.cert_pem
    # A certificate of the old CA is not current any more.
    assert tls.certificate("haproxy", new_ca, [LOOPBACK], ["localhost"]).leaf.issuer == new_ca.certificate.subject


def test_a_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tls = ClusterTLS(tmp_path / "tls", "demo", write=False)
    ca = tls.authority(lab_scope(), PhaseResult("t"))
    tls.certificate("haproxy", ca, [LOOPBACK], [])
    assert not (tmp_path / "tls").exists()
    assert "would make the cluster CA" in capsys.readouterr().out


def handshake(tmp_path: Path, bundle: bytes, ca_pem: bytes, server_name: str = "127.0.0.1") -> None:
    """A TLS server on loopback with this certificate; a client that trusts only the CA connects."""
    (tmp_path / "server.pem").write_bytes(bundle)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "server.pem")
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client_context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            tls.sendall(b"x")
    finally:
        listener.close()
        thread.join(timeout=5)


def test_a_client_trusting_the_ca_verifies_the_certificate(tmp_path: Path) -> None:
    tls = ClusterTLS(tmp_path / "tls", "demo")
    ca = tls.authority(lab_scope(), PhaseResult("t"))
    cert = tls.certificate("haproxy", ca, [LOOPBACK], ["localhost"])
    handshake(tmp_path, cert.bundle, ca.cert_pem)
    handshake(tmp_path, cert.bundle, ca.cert_pem, server_name="localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path, cert.bundle, ca.cert_pem, server_name="127.0.0.2")
    # An address alone (the registry's, a cloud lb's): no common name that OpenSSL would hold
    # against the CA's DNS constraints.
    address_only = tls.certificate("registry", ca, [LOOPBACK], [])
    assert address_only.leaf.subject == x509.Name([])
    handshake(tmp_path, address_only.bundle, ca.cert_pem)


def test_the_ca_cannot_vouch_beyond_its_scope(tmp_path: Path) -> None:
    """Even if its key were used to sign for another name, clients refuse: the CA is name-constrained."""
    ca = ClusterTLS(tmp_path / "tls", "demo").authority(
        Scope.of([ipaddress.ip_network("10.20.0.0/24")], []), PhaseResult("t")
    )
    outside = issue(ca, [LOOPBACK], [])  # 127.0.0.1 is not in 10.20.0.0/24
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)constraint|permitted"):
        handshake(tmp_path, outside.bundle, ca.cert_pem)


def test_a_users_certificate_is_checked_against_its_key(tmp_path: Path) -> None:
    ca = ClusterTLS(tmp_path / "tls", "demo").authority(lab_scope(), PhaseResult("t"))
    one, other = issue(ca, [LOOPBACK], []), issue(ca, [LOOPBACK], [])
    (tmp_path / "chain.pem").write_bytes(one.chain_pem + ca.cert_pem)
    (tmp_path / "key.pem").write_bytes(one.key_pem)
    (tmp_path / "other.pem").write_bytes(other.key_pem)
    mine = user_certificate(tmp_path / "chain.pem", tmp_path / "key.pem")
    assert mine.leaf == one.leaf and mine.chain_pem.count(b"BEGIN CERTIFICATE") == 2
    with pytest.raises(ConfigErrors, match=r"tls_key=.*is not the key of"):
        user_certificate(tmp_path / "chain.pem", tmp_path / "other.pem")
    with pytest.raises(ConfigErrors, match=r"tls_cert=.*absent"):
        user_certificate(tmp_path / "absent", tmp_path / "key.pem")


def test_haproxy_gets_the_users_certificate_when_configured(tmp_path: Path) -> None:
    ca = ClusterTLS(tmp_path / "other", "demo").authority(lab_scope(), PhaseResult("t"))
    mine = issue(ca, [LOOPBACK], ["reg.example.org"])
    (tmp_path / "chain.pem").write_bytes(mine.chain_pem)
    (tmp_path / "key.pem").write_bytes(mine.key_pem)
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "tls_cert": str(tmp_path / "chain.pem"),
            "tls_key": str(tmp_path / "key.pem"),
        }
    )
    runner = FakeRunner(lab_inventory(config, StatePaths(tmp_path)))
    runner.answer("echo ready", "ready")
    configure_haproxy(Session(config, StaticProvider(), runner), None)
    assert runner.files[("lb-1", CERT_PATH)] == mine.bundle
    assert f"certificate sha256 {mine.sha256}" in runner.files[("lb-1", DAEMON.new_path)].decode()
    assert not (tmp_path / "state" / "static" / "demo" / "tls").exists(), "no cluster CA is made then"


def test_haproxy_gets_a_cluster_ca_certificate_by_default(tmp_path: Path) -> None:
    config = parse_config({"state_dir": str(tmp_path)})
    runner = FakeRunner(lab_inventory(config, StatePaths(tmp_path)))
    runner.answer("echo ready", "ready")
    session = Session(config, StaticProvider(), runner)
    configure_haproxy(session, None)
    pem = runner.files[("lb-1", CERT_PATH)]
    leaf = x509.load_pem_x509_certificate(pem)
    assert leaf.issuer.rfc4514_string() == "CN=swarmlab demo CA"
    assert session.state.ca_cert.is_file() and b"PRIVATE KEY" in pem
    assert "mkdir -p /etc/haproxy/tls && chmod 700 /etc/haproxy/tls" in runner.commands("mkdir")


def test_two_lbs_share_one_certificate_for_both_addresses_and_the_vip() -> None:
    document = two_lbs(topology.vip_address(ipaddress.IPv4Network("10.20.0.0/24")))
    inventory = parse_inventory(json.dumps(document))
    addresses, names = lb_names(inventory, ["reg.example.org"])
    assert {str(a) for a in addresses} == {"10.20.0.5", "10.20.0.7", "10.20.0.4", "203.0.113.10"}
    assert names == {"reg.example.org"}
    # The stack believes X-Forwarded-For from either lb.
    assert inventory.lb_addresses == ("10.20.0.5", "10.20.0.7")
    assert lab_inventory(parse_config({}), StatePaths(Path("/state"))).lb_addresses == ("10.20.0.5",)


def client_certificate(ca: Authority, usages: list[x509.ObjectIdentifier] | None) -> bytes:
    """A client certificate signed with the CA's key (as a thief of the key would make one): key and
    chain in one PEM, with these extended key usages (none at all for None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem + cert.public_bytes(serialization.Encoding.PEM)


def mutual_handshake(tmp_path: Path, server: Certificate, client_pem: bytes, ca_pem: bytes) -> None:
    """A server on loopback that requires a client certificate of the CA; raises what the server saw."""
    (tmp_path / "server.pem").write_bytes(server.bundle)
    (tmp_path / "client.pem").write_bytes(client_pem)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "server.pem")
    server_context.load_verify_locations(tmp_path / "ca.pem")
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.maximum_version = ssl.TLSVersion.TLSv1_2  # the server's verdict within the handshake
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[BaseException] = []

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as error:
            seen.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client_context.load_cert_chain(tmp_path / "client.pem")
    try:
        with (
            contextlib.suppress(ssl.SSLError, OSError),
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client_context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"x")
    finally:
        thread.join(timeout=5)
        listener.close()
    if seen:
        raise seen[0]


def test_the_ca_vouches_for_servers_only(tmp_path: Path) -> None:
    """The CA carries the serverAuth EKU, and so does every certificate it issues: a client certificate
    made with its key (a leaked key) is refused by a server that trusts the CA."""
    tls = ClusterTLS(tmp_path / "tls", "demo")
    ca = tls.authority(lab_scope(), PhaseResult("t"))
    server = tls.certificate("haproxy", ca, [LOOPBACK], ["localhost"])
    for usages in ([ExtendedKeyUsageOID.CLIENT_AUTH], None):
        with pytest.raises(ssl.SSLError, match="certificate purpose"):
            mutual_handshake(tmp_path, server, client_certificate(ca, usages), ca.cert_pem)
    for cert in (ca.certificate, server.leaf):
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert list(usage.value) == [ExtendedKeyUsageOID.SERVER_AUTH] and not usage.critical


def test_on_a_cloud_with_two_lbs_the_vip_floating_ip_and_each_lbs_own_are_on_the_certificate_and_in_scope() -> None:
    """The Pulumi program's pair: each lb at a floating IP of its own (SSH), the users at the VIP's (HTTP),
    which no lb has as its own `public_ip`."""
    document = two_lbs()
    for node, address in zip(document["nodes"][:2], ("203.0.113.21", "203.0.113.22"), strict=True):
        assert node["role"] == "lb"
        node["public_ip"] = address
    inventory = parse_inventory(json.dumps(document))
    addresses, _ = lb_names(inventory, [])
    expected = {"10.20.0.5", "10.20.0.7", "10.20.0.4", "203.0.113.10", "203.0.113.21", "203.0.113.22"}
    assert {str(a) for a in addresses} == expected
    scope = cluster_scope(inventory, [])
    assert {"203.0.113.10/32", "203.0.113.21/32", "203.0.113.22/32"} <= {str(n) for n in scope.networks}
