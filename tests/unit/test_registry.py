"""The registry task with a fake runner: TLS from the cluster CA on the storage node, the CA trusted
for this registry by every engine (and no insecure registry), the public endpoint read-only and the
writable one on the storage node's loopback (its own unit under systemd), nothing redone when current."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from cryptography import x509

import registry.model as registry
from cluster.config import parse_config
from cluster.lab.layout import lab_inventory
from cluster.operations import Write
from cluster.plans.registry import plan_certificate, plan_trust
from cluster.providers.static import StaticProvider
from cluster.session import Session
from cluster.state import StatePaths
from cluster.tasks.registry import configure_registry
from tests.unit.fake_runner import FakeRunner, answer_as_written

REGISTRY = "10.20.0.6:5000"
TRUST = f"/etc/docker/certs.d/{REGISTRY}/ca.crt"


def session(tmp_path: Path, runner: FakeRunner | None = None, dry_run: bool = False) -> Session:
    config = parse_config({"state_dir": str(tmp_path)})
    runner = runner or FakeRunner(lab_inventory(config, StatePaths(tmp_path)))
    runner.answer("echo ready", "ready")
    return Session(config, StaticProvider(), runner, dry_run)


def test_a_fresh_storage_node_gets_a_tls_registry_every_engine_trusts(tmp_path: Path) -> None:
    first = session(tmp_path)
    configure_registry(first)
    runner = first.runner
    assert isinstance(runner, FakeRunner)
    trusted = sorted(node for node, path in runner.files if path == TRUST)
    assert trusted == ["manager-1", "manager-2", "manager-3", "storage-1", "worker-1", "worker-2", "worker-3"]
    ca = runner.files[("storage-1", TRUST)]
    assert ca == first.state.ca_cert.read_bytes()
    cert = x509.load_pem_x509_certificate(runner.files[("storage-1", registry.CERT_PATH)])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.20.0.6"]
    assert b"PRIVATE KEY" in runner.files[("storage-1", registry.KEY_PATH)]
    config = yaml.safe_load(runner.files[("storage-1", registry.CONFIG_PATH + ".new")])
    assert config["http"]["tls"] == {
        "certificate": registry.CERT_PATH,
        "key": registry.KEY_PATH,
        "minimumtls": "tls1.2",
    }
    assert config["http"]["addr"] == ":5000"
    # The public endpoint answers pulls only: pushes and deletes get 405 from it.
    assert config["storage"]["maintenance"] == {"readonly": {"enabled": True}}
    assert config["storage"]["delete"] == {"enabled": False}
    # The writable endpoint: the loopback only, plain HTTP, the same storage.
    push = yaml.safe_load(runner.files[("storage-1", registry.PUSH_CONFIG_PATH + ".new")])
    assert push["http"]["addr"] == "127.0.0.1:5001" and "tls" not in push["http"]
    assert "maintenance" not in push["storage"]
    assert push["storage"]["filesystem"] == config["storage"]["filesystem"]
    public, writable = runner.commands("setsid docker-registry serve")
    assert public.endswith(f"echo $! > {registry.PID_FILE})") and f"serve {registry.CONFIG_PATH} " in public
    assert (
        writable.endswith(f"echo $! > {registry.PUSH_PID_FILE})") and f"serve {registry.PUSH_CONFIG_PATH} " in writable
    )
    ready, push_ready = runner.commands("curl -sf")
    assert f"--cacert {TRUST} https://{REGISTRY}/v2/" in ready
    assert "curl -sf -o /dev/null http://127.0.0.1:5001/v2/" in push_ready
    assert not runner.commands("^systemctl"), "a lab node has no systemd: no unit"
    assert first.timings.changed


def test_under_systemd_the_writable_endpoint_gets_its_own_unit(tmp_path: Path) -> None:
    runner = FakeRunner(lab_inventory(parse_config({"state_dir": str(tmp_path)}), StatePaths(tmp_path)))
    runner.answer(r"printf 'config_sha", "config_sha=\nsystemd=yes\nrunning=no\n", node="storage-1")
    first = session(tmp_path, runner)
    configure_registry(first)
    unit = runner.files[("storage-1", registry.PUSH_UNIT_PATH)].decode()
    assert f"ExecStart=/usr/bin/docker-registry serve {registry.PUSH_CONFIG_PATH}\n" in unit
    assert "User=docker-registry\n" in unit
    commands = runner.commands("^systemctl")
    assert commands == [
        "systemctl enable docker-registry && systemctl restart docker-registry",
        "systemctl daemon-reload",
        "systemctl enable docker-registry-push && systemctl restart docker-registry-push",
    ]
    # Second run: the unit and both configurations current, both running: nothing.
    again_runner = FakeRunner(runner.inventory)
    answer_as_written(again_runner, runner.files)
    again_runner.answer(r"printf 'config_sha", "config_sha=\nsystemd=yes\nrunning=yes\n", node="storage-1")
    for path in (registry.CONFIG_PATH, registry.PUSH_CONFIG_PATH):
        sha = hashlib.sha256(runner.files[("storage-1", path + ".new")]).hexdigest()
        again_runner.answer(rf"sha256sum {path} ", f"config_sha={sha}\nsystemd=yes\nrunning=yes\n", node="storage-1")
    again = session(tmp_path, again_runner)
    configure_registry(again)
    assert not again_runner.files and not again_runner.commands("^systemctl") and not again.timings.changed


def test_a_current_registry_is_left_alone(tmp_path: Path) -> None:
    first = session(tmp_path)
    configure_registry(first)
    assert isinstance(first.runner, FakeRunner)
    runner = FakeRunner(first.runner.inventory)
    answer_as_written(runner, first.runner.files)
    again = session(tmp_path, runner)
    configure_registry(again)
    assert not runner.files and not again.timings.changed


def test_a_dry_run_writes_nothing_anywhere(tmp_path: Path) -> None:
    dry = session(tmp_path, dry_run=True)
    configure_registry(dry)
    assert isinstance(dry.runner, FakeRunner)
    assert not dry.runner.files and not (tmp_path / "static").exists()
    assert dry.timings.would_change


def test_plans_write_only_what_differs() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\n"
    sha = hashlib.sha256(ca).hexdigest()
    plan = plan_trust(REGISTRY, ca, {"worker-1": sha, "worker-2": ""})
    writes = [op for op in plan.operations if isinstance(op, Write)]
    assert [(w.node, w.path, w.mode) for w in writes] == [("worker-2", TRUST, 0o444)]
    chain, key = b"chain", b"key"
    assert plan_certificate("storage-1", chain, key, hashlib.sha256(chain).hexdigest(), "x").operations == ()
    fresh = [op for op in plan_certificate("storage-1", chain, key, "", "x").operations if isinstance(op, Write)]
    assert [(w.path, w.mode) for w in fresh] == [(registry.KEY_PATH, 0o600), (registry.CERT_PATH, 0o644)]


def test_the_registry_restarts_under_systemd_for_a_new_certificate() -> None:
    # Distribution reads its certificate at start only: a reload would keep serving the old one.
    assert registry.daemon(REGISTRY).systemd_reload == "restart"
