"""Rendering against golden files. Regenerate after an intended change with UPDATE_GOLDEN=1."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import nfs.model as nfs
import registry.model as registry
import topology
from bench import chaos, throughput
from cluster.config import Config, parse_config
from cluster.errors import ConfigErrors
from cluster.lab.build import node_build_context
from cluster.lab.layout import lab_inventory
from cluster.plans.clustermap import map_route
from cluster.providers.static import StaticProvider
from cluster.session import Session
from cluster.state import StatePaths
from cluster.tasks.deploy import StackInput, render_stack
from cluster.tasks.haproxy import redirect_port, routes_of
from cluster.tasks.nfs import configure_nfs
from cluster.workload import load_workload
from haproxy.model import CERT_PATH, CONN_PER_SOURCE, Tls, build, render_config
from rendering.provision import ROLES, ProvisionInput, daemon_json, engine_metrics_ip, provision_script
from rendering.render import render
from tests.unit.fake_runner import FakeRunner

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text()


HELLO = load_workload("hello", "lab")


CERT_SHA = "c0ffee" * 10 + "c0de"


def haproxy_cfg(workers: int = 3, redirect_port: int | None = 8443) -> str:
    inventory = lab_inventory(parse_config({"workers": workers}), StatePaths(Path("/state")))
    servers = [(w.name, str(w.private_ip)) for w in inventory.workers]
    return render_config(build(inventory.cluster, servers, routes_of([HELLO]), Tls(CERT_SHA, redirect_port)))


def test_haproxy_cfg_for_the_hello_stack() -> None:
    text = haproxy_cfg()
    check_golden("haproxy-hello.cfg", text)
    for worker in ("10.20.0.21:8090", "10.20.0.22:8090", "10.20.0.23:8090"):
        assert f" {worker} check" in text
    assert "retry-on conn-failure" in text and "option redispatch" in text and "master-worker" in text
    assert "use_backend hello if { path_beg /hello/ }" in text and "default_backend" not in text


def frontend(text: str, name: str) -> str:
    return text.split(f"\nfrontend {name}\n", 1)[1].split("\n\n", 1)[0]


def test_haproxy_terminates_tls_and_plain_http_only_redirects() -> None:
    text = haproxy_cfg()
    https = frontend(text, "https")
    assert f"bind :443 ssl crt {CERT_PATH} alpn h2,http/1.1" in https
    assert f"certificate sha256 {CERT_SHA}" in https, "a new certificate must change the file, hence reload"
    assert 'http-after-response set-header Strict-Transport-Security "max-age=31536000"' in https
    assert "http-request set-header X-Forwarded-Proto https" in https and "use_backend hello" in https
    http = frontend(text, "http")
    # Nothing is served without TLS: the plain frontend has no backend, only the redirect.
    assert "use_backend" not in http and "default_backend" not in http
    assert "http-request redirect location https://%[req.hdr(host),field(1,:)]:8443%[pathq] code 301" in http
    assert "http-request redirect scheme https code 301" in frontend(haproxy_cfg(redirect_port=None), "http")
    assert "ssl-min-ver TLSv1.2" in text and "no-tls-tickets" in text


def test_haproxy_sets_the_security_headers_and_strips_the_banners() -> None:
    https = frontend(haproxy_cfg(), "https")
    policy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
    # On every answer (HAProxy's own 503 and 401 too), unless the route or the service set a policy.
    assert (
        f'http-after-response set-header Content-Security-Policy "{policy}" '
        "unless { res.hdr(content-security-policy) -m found }"
    ) in https
    assert "http-after-response set-header X-Content-Type-Options nosniff" in https
    assert "http-after-response set-header Referrer-Policy same-origin" in https
    assert "http-after-response del-header Server" in https
    assert "http-after-response del-header X-Served-By" in https


def test_a_route_with_a_policy_of_its_own_gets_it_in_its_backend_only() -> None:
    inventory = lab_inventory(parse_config({}), StatePaths(Path("/state")))
    servers = [(w.name, str(w.private_ip)) for w in inventory.workers]
    registration = load_workload("registration", "lab")
    text = render_config(build(inventory.cluster, servers, routes_of([registration]), Tls(CERT_SHA)))
    prometheus = text.split("\nbackend prometheus\n", 1)[1].split("\n\n", 1)[0]
    assert "http-response set-header Content-Security-Policy \"default-src 'self'; script-src 'self'" in prometheus
    ui = text.split("\nbackend ui\n", 1)[1].split("\n\n", 1)[0]
    assert "Content-Security-Policy" not in ui


def test_haproxy_cuts_slow_bodies_and_limits_connections_per_source() -> None:
    text = haproxy_cfg()
    defaults = text.split("\ndefaults\n", 1)[1].split("\n\n", 1)[0]
    assert "    option http-buffer-request\n" in defaults and "    timeout http-request 10s\n" in defaults
    assert "stick-table type ip size 100k expire 60s store conn_cur" in text
    for name in ("http", "https"):
        rules = frontend(text, name)
        assert "tcp-request connection track-sc0 src table per_source" in rules
        assert "tcp-request connection reject if { sc0_conn_cur gt 200 }" in rules
    inventory = lab_inventory(parse_config({}), StatePaths(Path("/state")))
    servers = [(w.name, str(w.private_ip)) for w in inventory.workers]
    raised = render_config(build("demo", servers, routes_of([HELLO]), Tls(CERT_SHA), conn_per_source=500))
    assert "{ sc0_conn_cur gt 500 }" in frontend(raised, "https")


def test_the_connection_limit_is_configured_above_what_the_project_opens_itself() -> None:
    """make bench's hey opens 24 connections from one address (the lab's clients all share one):
    the default and the lowest allowed value stay above it."""
    assert parse_config({}).edge_conn_per_source == 200
    assert parse_config({"edge_conn_per_source": 1000}).edge_conn_per_source == 1000
    with pytest.raises(ConfigErrors, match="edge_conn_per_source"):
        parse_config({"edge_conn_per_source": 10})
    highest = max(throughput.CONCURRENCY, chaos.GET_CONNECTIONS + chaos.FLOW_THREADS)
    assert highest < CONN_PER_SOURCE and highest < Config.model_fields["edge_conn_per_source"].metadata[0].ge


def haproxy_command(directory: Path) -> list[str] | None:
    """`haproxy` here, else the lab's node image (Debian's haproxy 2.6, as on the lb node) when it is
    already built: run without a network, the directory mounted read-only; never pulled."""
    if shutil.which("haproxy"):
        return ["haproxy"]
    try:
        listed = subprocess.run(
            ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "swarmlab/node"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not listed:
        return None
    mount = f"{directory}:{directory}:ro"
    return ["docker", "run", "--rm", "--network", "none", "-v", mount, "--entrypoint", "haproxy", listed[0]]


def test_haproxy_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    """`haproxy -c` on the registration stack's configuration (with the hello stack and the map)."""
    command = haproxy_command(tmp_path)
    if command is None:
        pytest.skip("no haproxy binary and no swarmlab/node image here")
    tmp_path.chmod(0o755)
    certificate = tmp_path / "site.pem"
    certificate.write_text(self_signed_pem())
    certificate.chmod(0o644)
    inventory = lab_inventory(parse_config({}), StatePaths(Path("/state")))
    servers = [(w.name, str(w.private_ip)) for w in inventory.workers]
    managers = [(m.name, str(m.private_ip)) for m in inventory.managers]
    routes = routes_of([load_workload("registration", "lab"), HELLO], reserved=(map_route(managers, 9080),))
    tls = Tls(CERT_SHA, 8443, certificate_path=str(certificate))
    config = build("demo", servers, routes, tls, private_address="127.0.0.1", admin_password_digest="AB" * 32)
    (tmp_path / "haproxy.cfg").write_text(render_config(config))
    (tmp_path / "haproxy.cfg").chmod(0o644)
    done = subprocess.run(
        [*command, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and "Configuration file is valid" in done.stdout + done.stderr, done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stderr


def self_signed_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "haproxy -c")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    return (
        pem
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    ).decode()


def test_haproxy_workers_run_unprivileged() -> None:
    globals_ = haproxy_cfg().split("\ndefaults\n", 1)[0]
    assert "    user haproxy\n" in globals_ and "    group haproxy\n" in globals_
    assert "    chroot /var/lib/haproxy\n" in globals_


@pytest.mark.parametrize(
    ("endpoint", "port"),
    [
        ("https://127.0.0.1:8443", 8443),
        ("https://203.0.113.10", None),
        ("https://x.example:443", None),
        ("http://h", None),
    ],
)
def test_the_redirect_port_comes_from_the_inventory_endpoint(endpoint: str, port: int | None) -> None:
    assert redirect_port(endpoint) == port


def test_haproxy_cfg_grows_with_the_workers() -> None:
    assert haproxy_cfg(workers=5).count("server worker-") == 5


def test_hello_stack() -> None:
    # As build-images passes them: the public endpoint, pinned by digest.
    data = StackInput(images={"hello": f"10.20.0.6:5000/swarmlab/hello:abc@sha256:{'0f' * 32}"}, ports={"hello": 8090})
    text = render_stack(HELLO, data)
    check_golden("stack-hello.yaml", text)
    web = yaml.safe_load(text)["services"]["web"]
    assert web["ports"][0]["mode"] == "host" and web["ports"][0]["published"] == 8090
    assert web["deploy"]["mode"] == "global"
    assert web["deploy"]["placement"]["constraints"] == ["node.role == worker"]
    assert "healthcheck" in web
    # CIS 5.12 and 5.28: a read-only root and a PIDs limit (the Compose version whose schema takes it).
    assert web["read_only"] is True and web["deploy"]["resources"]["limits"]["pids"] == 64
    assert yaml.safe_load(text)["version"] == "3.9"


@pytest.mark.parametrize("role", ROLES)
def test_provision_scripts(role: str) -> None:
    text = provision_script(role)
    check_golden(f"provision-{role}.sh", text)
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)
    assert "PasswordAuthentication no" in text


def test_storage_script_takes_its_paths_and_registry_port_from_topology() -> None:
    text = provision_script("storage")
    assert f"mkdir -p /var/run/ganesha {topology.EXPORT_DIR} " in text
    assert f"(port {topology.REGISTRY_PORT})" in text
    assert f'target="${{SWARMLAB_DATA_MOUNTPOINT:-{topology.DATA_ROOT}}}"' in text
    # Other values show through everywhere: no literal copy of the facts is left in the template.
    moved = render(
        "provision/storage.sh.j2",
        ProvisionInput("storage", data_root="/var/lab", export_dir="/var/lab/export", registry_port=5999),
    )
    assert "/srv/swarmlab" not in moved and "5000" not in moved
    assert "mkdir -p /var/run/ganesha /var/lab/export " in moved and "(port 5999)" in moved
    assert 'SWARMLAB_DATA_MOUNTPOINT:-/var/lab}"' in moved
    # The registry's configuration is the registry task's, with the port from topology.
    config = registry.render_config(registry.build("ab" * 32))
    assert f"  addr: :{topology.REGISTRY_PORT}\n" in config and "  tls:\n" in config


def test_no_engine_trusts_an_insecure_registry() -> None:
    # The registry serves TLS from the cluster CA, trusted per registry in /etc/docker/certs.d.
    assert "insecure" not in daemon_json()
    assert json.loads(daemon_json())["log-driver"] == "json-file"


def test_daemon_json_carries_the_cis_engine_settings_on_every_role() -> None:
    # CIS 2.1 icc off (the default bridge only), 2.14 no-new-privileges, 2.15 no userland proxy; live-restore
    # stays off: dockerd refuses it in swarm mode.
    for metrics_ip in (None, "10.20.0.21"):
        engine = json.loads(daemon_json(metrics_ip))
        assert engine["icc"] is False and engine["no-new-privileges"] is True, metrics_ip
        assert engine["userland-proxy"] is False and engine["live-restore"] is False, metrics_ip


def test_daemon_json_serves_engine_metrics_on_the_private_address_of_swarm_nodes_only() -> None:
    worker = json.loads(daemon_json(engine_metrics_ip("worker", "10.20.0.21")))
    assert worker["metrics-addr"] == "10.20.0.21:9323"  # never 0.0.0.0: the cluster network only
    assert json.loads(daemon_json(engine_metrics_ip("manager", "10.20.0.11")))["metrics-addr"]
    assert "metrics-addr" not in json.loads(daemon_json(engine_metrics_ip("storage", "10.20.0.6")))


def test_missing_value_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render("registry/config.yml.j2", {})


def test_node_image_tag_changes_with_the_provisioning_scripts() -> None:
    one = node_build_context(parse_config({}), "base:1")
    assert one.tag == node_build_context(parse_config({}), "base:1").tag
    assert one.tag != node_build_context(parse_config({}), "base:2").tag
    assert one.tag != node_build_context(parse_config({"debian_suite": "trixie"}), "base:1").tag


def test_a_lab_node_runs_the_isolation_script_once_its_engine_answers_and_keeps_low_ports_for_root() -> None:
    init = node_build_context(parse_config({}), "base:1").files["node-init.sh"].decode()
    assert "echo 1024 > /proc/sys/net/ipv4/ip_unprivileged_port_start" in init
    started, waited, isolated = (
        init.index("dockerd >"),
        init.index("until docker info"),
        init.index(f"{topology.ISOLATION_SCRIPT} >>"),
    )
    assert started < waited < isolated < init.index("exec /usr/sbin/sshd")


def test_nfs_export_is_root_squashed_and_limited_to_the_workers() -> None:
    text = nfs.render_config(nfs.build(("10.20.0.22", "10.20.0.21", "10.20.0.6", "10.20.0.21")))
    check_golden("ganesha.conf", text)
    assert "Squash = Root_Squash;" in text and "No_Root_Squash" not in text
    assert "PrivilegedPort = true;" in text
    # Nobody by default, the listed addresses read-write: no subnet, no wildcard.
    assert "    Access_Type = None;\n" in text
    assert "        Clients = 10.20.0.6, 10.20.0.21, 10.20.0.22;\n" in text
    assert "/" not in text.split("Clients = ", 1)[1].split(";", 1)[0] and "*" not in text
    with pytest.raises(ValueError, match="at least one client"):
        nfs.build(())


def test_the_nfs_task_exports_to_the_workers_and_the_storage_node_only(tmp_path: Path) -> None:
    config = parse_config({"state_dir": str(tmp_path), "workers": 2})
    runner = FakeRunner(lab_inventory(config, StatePaths(tmp_path)))
    runner.answer("nfs-ls", "ready")
    configure_nfs(Session(config, StaticProvider(), runner))
    text = runner.files[("storage-1", "/etc/ganesha/ganesha.conf.new")].decode()
    assert "Clients = 10.20.0.6, 10.20.0.21, 10.20.0.22;" in text


def test_only_safe_or_keyed_requests_are_retried_past_a_refused_connection() -> None:
    """retry-on covers empty answers and timeouts; the frontend turns that off for a request that is
    neither a GET/HEAD nor keyed (Idempotency-Key: the API answers a repeat with the first result)."""
    text = haproxy_cfg()
    assert "retry-on conn-failure empty-response response-timeout" in text
    disables = [line.strip() for line in text.splitlines() if "disable-l7-retry" in line]
    assert disables and all(
        line == "http-request disable-l7-retry if !METH_GET !METH_HEAD !{ req.hdr(idempotency-key) -m found }"
        for line in disables
    ), disables
