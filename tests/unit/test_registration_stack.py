"""The registration stack as rendered: segmentation, update policies, storage, and no secret values."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cluster.config import parse_config
from cluster.errors import ConfigErrors, SwarmlabError
from cluster.plans.stack import check_placement
from cluster.tasks.deploy import StackInput, render_stack
from cluster.workload import load_workload
from tests.unit.test_render import check_golden

GENERATED = load_workload("registration", "lab").manifest.secrets.generated
SECRETS = {name: f"registration_{name}_0123456789" for name in GENERATED}


def rendered(environment: str, mode: str) -> tuple[str, dict[str, Any]]:
    workload = load_workload("registration", environment)
    values = workload.values
    assert values is not None
    images = {r.name: f"10.20.0.6:5000/swarmlab/{r.name}:tag" for r in workload.manifest.images}
    secrets = SECRETS | ({"smtp_password": "registration_smtp_password_0123456789"} if values["smtp"]["user"] else {})
    volumes = (
        {"postgres": "postgres-data", "redis": "redis-data"}
        if mode == "nfs"
        else {"postgres": "/srv/swarmlab/data/postgres", "redis": "/srv/swarmlab/data/redis"}
    )
    data = StackInput(
        images=images,
        values=values,
        ports={r.name: r.port for r in workload.manifest.routes},
        volumes=volumes,
        secrets=secrets,
        storage_mode=mode,
        nfs_options="addr=10.20.0.6,hard,nfsvers=4.1,timeo=600,retrans=2",
        nfs_pseudo="/data",
        configs={c.name: f"registration_{c.name}_0123456789ab" for c in workload.configs},
        lb_addresses=("10.20.0.5",),
        overlay_pool="10.128.0.0/16",
    )
    text = render_stack(workload, data)
    return text, yaml.safe_load(text)


def test_lab_stack_golden() -> None:
    text, _ = rendered("lab", "shared-dir")
    check_golden("stack-registration-lab.yaml", text)


def test_segmentation_keeps_the_ui_away_from_the_database_and_the_broker() -> None:
    _, stack = rendered("lab", "shared-dir")
    services = stack["services"]
    nets = {name: set(s["networks"]) for name, s in services.items()}
    assert nets["ui"] == {"edge", "session", "metrics"}
    assert nets["postgres"] == {"db"} and nets["rabbitmq"] == {"rpc"}
    assert not nets["ui"] & (nets["postgres"] | nets["rabbitmq"] | nets["redis"])
    assert nets["api"] == {"edge", "rpc", "metrics"}
    assert not nets["api"] & nets["postgres"]


def test_x_forwarded_for_is_believed_from_haproxy_and_for_the_api_from_the_overlays() -> None:
    _, stack = rendered("lab", "shared-dir")
    services = stack["services"]
    assert services["ui"]["environment"]["FORWARDED_ALLOW_IPS"] == "10.20.0.5"
    # The UI calls the API over the edge overlay with the user's address in X-Forwarded-For.
    assert services["api"]["environment"]["FORWARDED_ALLOW_IPS"] == "10.20.0.5,10.128.0.0/16"


def test_the_metrics_network_holds_the_python_services_and_prometheus_only() -> None:
    _, stack = rendered("lab", "shared-dir")
    on_metrics = {name for name, s in stack["services"].items() if "metrics" in s["networks"]}
    python = {name for name, s in stack["services"].items() if "registration." in " ".join(s.get("command", []))}
    assert on_metrics == python | {"prometheus"}
    assert stack["services"]["prometheus"]["networks"] == ["metrics"]  # it reaches no data store


def test_every_service_has_a_healthcheck_worker_placement_and_dnsrr() -> None:
    _, stack = rendered("lab", "shared-dir")
    for name, service in stack["services"].items():
        assert "healthcheck" in service, name
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        assert service["deploy"]["placement"]["constraints"] == ["node.role == worker"], name
        assert service["deploy"]["update_config"]["failure_action"] == "rollback", name
        for port in service.get("ports", []):
            assert port["mode"] == "host", name


def test_every_service_runs_read_only_with_a_pids_limit_and_writes_only_to_small_tmpfs_or_volumes() -> None:
    for environment, mode in (("lab", "shared-dir"), ("prod", "nfs")):
        _, stack = rendered(environment, mode)
        assert stack["version"] == "3.9"  # Docker 20.10's schema takes `pids` from 3.9 on
        for name, service in stack["services"].items():
            assert service["read_only"] is True, name  # CIS 5.12
            assert 0 < service["deploy"]["resources"]["limits"]["pids"] <= 256, name  # CIS 5.28
            for mount in service.get("volumes", []):
                if isinstance(mount, dict):  # the short form names a volume or a data directory
                    assert mount["type"] == "tmpfs" and 0 < mount["tmpfs"]["size"] <= 64 << 20, (name, mount)
    services = rendered("lab", "shared-dir")[1]["services"]

    def tmpfs(name: str) -> set[str]:
        return {m["target"] for m in services[name].get("volumes", []) if isinstance(m, dict)}

    # What each writes: the heartbeat (/tmp/healthy), the entrypoints' private files, the backups' files.
    assert all(tmpfs(name) == {"/tmp"} for name in ("otp", "student", "enroll", "email", "email_otp", "ui"))
    assert tmpfs("postgres") == {"/tmp", "/var/run/postgresql"}
    assert tmpfs("redis") == {"/tmp", "/run/redis-conf"} and tmpfs("redis-session") == {"/run/redis-conf"}
    assert tmpfs("rabbitmq") == {"/tmp", "/etc/rabbitmq/private"}


def test_stateful_services_are_single_stop_first_and_workers_start_first() -> None:
    _, stack = rendered("lab", "shared-dir")
    services = stack["services"]
    for name in ("postgres", "redis", "mailsink"):
        assert services[name]["deploy"]["replicas"] == 1
    for name in ("postgres", "rabbitmq", "redis", "mailsink"):
        assert services[name]["deploy"]["update_config"]["order"] == "stop-first"
    for name in ("otp", "student", "enroll", "email", "email_otp"):
        assert services[name]["deploy"]["update_config"]["order"] == "start-first"
    assert services["ui"]["deploy"]["placement"]["max_replicas_per_node"] == 1


@pytest.mark.parametrize("environment", ["lab", "prod"])
def test_two_brokers_run_on_two_workers_behind_one_name(environment: str) -> None:
    """Independent brokers, each task its own address under the name rabbitmq (dnsrr): a worker's
    queue is consumed on each, and a broker lost with its worker loses no request."""
    _, stack = rendered(environment, "shared-dir" if environment == "lab" else "nfs")
    broker = stack["services"]["rabbitmq"]["deploy"]
    assert broker["replicas"] == 2 and broker["endpoint_mode"] == "dnsrr"
    assert broker["placement"] == {"constraints": ["node.role == worker"], "max_replicas_per_node": 1}
    check_placement("registration", stack, workers=3)
    with pytest.raises(SwarmlabError, match=r"rabbitmq: replicas 2, but it has max_replicas_per_node 1 .* at most 1"):
        check_placement("registration", stack, workers=1)


def test_nfs_mode_mounts_hard_nfs_41_volumes() -> None:
    _, stack = rendered("prod", "nfs")
    volume = stack["volumes"]["postgres-data"]["driver_opts"]
    assert volume["type"] == "nfs" and volume["device"] == ":/data/postgres"
    assert "hard" in volume["o"].split(",") and "nfsvers=4.1" in volume["o"] and "soft" not in volume["o"]
    assert "postgres-data:/var/lib/postgresql/data" in stack["services"]["postgres"]["volumes"]


def test_prod_has_no_mailsink_and_relays_with_a_password_secret() -> None:
    _, stack = rendered("prod", "nfs")
    assert "mailsink" not in stack["services"]
    email = stack["services"]["email"]
    assert email["environment"]["SMTP_PASSWORD_FILE"] == "/run/secrets/smtp_password"
    assert "smtp_password" in email["secrets"]


def test_no_password_reaches_the_environment_only_secret_files() -> None:
    _, stack = rendered("prod", "nfs")
    for name, service in stack["services"].items():
        for key in service.get("environment", {}):
            assert not key.endswith("PASSWORD"), f"{name} sets {key} in its environment"
    assert {s["name"] for s in stack["secrets"].values()} >= set(SECRETS.values())
    assert all(s["external"] for s in stack["secrets"].values())


def test_only_the_api_holds_the_admin_credential() -> None:
    assert "admin_password" in load_workload("registration", "lab").manifest.secrets.generated
    for environment, mode in (("lab", "shared-dir"), ("prod", "nfs")):
        _, stack = rendered(environment, mode)
        services = stack["services"]
        api = services["api"]
        assert "admin_password" in api["secrets"]
        assert api["environment"]["ADMIN_PASSWORD_FILE"] == "/run/secrets/admin_password"
        assert api["environment"]["ADMIN_USER"] == "admin"
        holders = {name for name, service in services.items() if "admin_password" in service.get("secrets", [])}
        assert holders == {"api"}, "the UI (or anything else) must not hold the admin credential"


def test_the_ui_waits_longer_than_the_api_retries() -> None:
    _, stack = rendered("lab", "shared-dir")
    services = stack["services"]
    deadline = float(services["api"]["environment"]["REQUEST_DEADLINE"])
    assert float(services["ui"]["environment"]["API_TIMEOUT"]) > deadline >= 20
    otp = services["otp"]["environment"]
    assert int(otp["OTP_RATE_PER_EMAIL"]) > 0 and int(otp["OTP_RATE_PER_CLIENT"]) > 0
    # a task being stopped (its worker drained) lets the requests it holds finish their retries
    for name in ("api", "ui"):
        assert float(services[name]["environment"]["SHUTDOWN_GRACE"]) > deadline
        assert int(services[name]["stop_grace_period"].rstrip("s")) > float(
            services[name]["environment"]["SHUTDOWN_GRACE"]
        )
    for name in ("otp", "student", "enroll", "email", "email_otp"):
        assert int(services[name]["stop_grace_period"].rstrip("s")) > 10  # RpcServer.stop's grace


def test_mail_route_only_where_the_mailsink_runs() -> None:
    lab = load_workload("registration", "lab")
    prod = load_workload("registration", "prod")
    assert [r.name for r in lab.routes] == ["ui", "api", "mail", "prometheus"]
    assert [r.name for r in prod.routes] == ["ui", "api"], "no mail sink, and Prometheus off the public edge"


def test_unknown_environment_names_the_choices_before_anything_runs() -> None:
    with pytest.raises(ConfigErrors, match="lab, prod") as caught:
        parse_config({"environment": "staging"})
    assert caught.value.errors[0].key == "environment"


def test_unknown_stack_names_the_bundles() -> None:
    with pytest.raises(ConfigErrors, match="hello, registration") as caught:
        parse_config({"stack": "wordpress"})
    assert caught.value.errors[0].key == "stack"


def test_every_redis_requires_a_password_its_clients_hold() -> None:
    """Each Redis server reads requirepass from its own secret file; each client holds that same file."""
    for environment, mode in (("lab", "shared-dir"), ("prod", "nfs")):
        _, stack = rendered(environment, mode)
        services = stack["services"]
        servers = {"redis": "redis_password", "redis-session": "redis_session_password"}
        for server, secret in servers.items():
            assert services[server]["environment"]["REDIS_PASSWORD_FILE"] == f"/run/secrets/{secret}"
            assert services[server]["secrets"] == [secret]
        clients = {
            name: service["environment"]
            for name, service in services.items()
            if "REDIS_HOST" in service.get("environment", {})
        }
        assert set(clients) == {"ui", "otp"}
        for name, env in clients.items():
            secret = servers[env["REDIS_HOST"]]
            assert env["REDIS_PASSWORD_FILE"] == f"/run/secrets/{secret}", name
            assert secret in services[name]["secrets"], name
        holders = {s: {n for n, svc in services.items() if s in svc.get("secrets", [])} for s in servers.values()}
        assert holders == {"redis_password": {"redis", "otp"}, "redis_session_password": {"redis-session", "ui"}}


def test_the_session_store_evicts_by_ttl_below_its_memory_limit() -> None:
    """A flood of sessions costs the sessions nearest their end, not the server (and every user's session)."""
    for environment, mode in (("lab", "shared-dir"), ("prod", "nfs")):
        _, stack = rendered(environment, mode)
        sessions = stack["services"]["redis-session"]
        env = sessions["environment"]
        assert env["REDIS_MAXMEMORY_POLICY"].startswith("volatile-")
        maxmemory = int(env["REDIS_MAXMEMORY"].removesuffix("mb"))
        limit = int(sessions["deploy"]["resources"]["limits"]["memory"].removesuffix("M"))
        assert maxmemory <= limit * 0.8, "room for Redis' own overhead under the container's limit"


def test_each_hmac_key_is_held_by_its_one_service() -> None:
    for environment, mode in (("lab", "shared-dir"), ("prod", "nfs")):
        _, stack = rendered(environment, mode)
        services = stack["services"]
        owners = {"otp_digest_key": "otp", "register_proof_key": "api", "ui_csrf_key": "ui"}
        variables = {
            "otp_digest_key": "OTP_DIGEST_KEY_FILE",
            "register_proof_key": "PROOF_KEY_FILE",
            "ui_csrf_key": "CSRF_KEY_FILE",
        }
        for secret, owner in owners.items():
            assert secret in GENERATED
            holders = {name for name, service in services.items() if secret in service.get("secrets", [])}
            assert holders == {owner}, secret
            assert services[owner]["environment"][variables[secret]] == f"/run/secrets/{secret}"


def test_more_edge_replicas_than_workers_is_refused_before_deploying_naming_each_service() -> None:
    """ui and api publish host-mode ports: one task a worker. On one worker the lab values' 3 would
    leave two of each pending and the deploy waiting its whole timeout; refused at once instead."""
    _, stack = rendered("lab", "shared-dir")
    check_placement("registration", stack, workers=3)
    with pytest.raises(SwarmlabError) as refused:
        check_placement("registration", stack, workers=1)
    message = str(refused.value)
    assert "stack registration cannot be placed on this cluster" in message
    for service in ("ui", "api"):
        assert f"{service}: replicas 3, but it publishes port" in message
    assert "the cluster has 1 worker(s), so at most 1 can run" in message and "--values" in message
    assert "postgres" not in message  # one replica fits


def test_placement_limits_count_max_replicas_per_node_and_skip_global_and_labelled_services() -> None:
    def service(**deploy: object) -> dict[str, object]:
        return {"deploy": deploy}

    stack = {
        "services": {
            "spread": service(replicas=5, placement={"max_replicas_per_node": 2}),
            "everywhere": {"deploy": {"mode": "global"}, "ports": [{"published": 80, "mode": "host"}]},
            "pinned": service(
                replicas=9, placement={"constraints": ["node.labels.ssd == true"], "max_replicas_per_node": 1}
            ),
            "free": service(replicas=40),
        }
    }
    check_placement("s", stack, workers=3)  # 5 <= 2 x 3; the others are not judged or unlimited
    with pytest.raises(SwarmlabError, match=r"spread: replicas 5, but it has max_replicas_per_node 2 .* at most 4"):
        check_placement("s", stack, workers=2)


def test_overlays_are_encrypted_in_prod_and_plain_in_the_lab() -> None:
    """prod: every overlay carries `encrypted` (IPsec ESP, opened between workers by Pulumi's
    overlay_encryption); the lab's kernel has no ESP, so its overlays stay plain."""
    _, prod = rendered("prod", "nfs")
    _, lab = rendered("lab", "shared-dir")
    assert prod["networks"].keys() == lab["networks"].keys() and len(prod["networks"]) == 7
    for name, network in prod["networks"].items():
        assert network == {"driver": "overlay", "driver_opts": {"encrypted": ""}}, name
    for name, network in lab["networks"].items():
        assert network == {"driver": "overlay"}, name
