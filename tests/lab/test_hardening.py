"""Hardening on a real lab: HTTPS at the edge verified against the lab's own CA (plain HTTP only
redirects), the registry over TLS with no insecure registry on any engine, read-only to every node
but the storage node (whose builds push on its loopback) and the stack pinned by digest, an NFS export that
squashes root, pinned host keys and timeouts that name the host, lab-down keeping away from the
state of other targets of the same cluster name, and the OTP and session rules that take abuse
(a replayed key, cookieless floods, an anonymous client's wrong codes). Traffic goes to 127.0.0.1 and the lab's nodes only."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import docker
import httpx
import pytest

from cluster.errors import CommandFailed
from cluster.facts.storage import MANIFEST_TYPES
from cluster.inventory import Node, Role
from cluster.lab.keys import new_key_pair
from cluster.plans.stack import REMOTE_STACKS
from haproxy.model import CERT_PATH
from registry.model import PUSH_ENDPOINT, trust_path
from tests.lab.conftest import LAB_ENV, PLANTED, Lab, fab
from tests.lab.test_registration import (
    REDIS_SECRETS,
    STACK,
    csrf,
    eligible,
    fresh_email,
    in_service,
    mails,
    node_of,
    otp_from,
    redis_cli,
    sql,
)
from topology import REGISTRY_DATA_DIR, REGISTRY_PUSH_PORT

pytestmark = pytest.mark.lab


def test_https_answers_with_the_lab_ca_and_plain_http_only_redirects(lab: Lab) -> None:
    assert lab.url.startswith("https://")
    with httpx.Client(timeout=10, verify=lab.tls) as client:
        page = client.get(lab.url + "/")
        assert page.status_code == 200
        assert page.headers["strict-transport-security"] == "max-age=31536000"
        # The UI's session cookie travels over TLS only (the lab's values set it Secure, as prod's do).
        assert "secure" in page.headers["set-cookie"].lower()
    plain = f"http://{lab.config.bind_address}:{lab.config.http_port}"
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        moved = client.get(plain + "/mail/messages?to=a@example.org")
        assert moved.status_code == 301
        assert moved.headers["location"] == lab.url + "/mail/messages?to=a@example.org"
        assert "x-served-by" not in moved.headers, "plain HTTP must reach no service"
    # Nobody else's trust vouches for the lab: verification against the system's CAs fails.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(lab.url + "/", timeout=10)


def test_haproxy_serves_as_an_unprivileged_user_and_keeps_its_key_private(lab: Lab) -> None:
    lb = lab.inventory.lb
    users = lab.nodes.run(lb, "ps -o user= -C haproxy").stdout.split()
    assert users.count("root") == 1, f"only the master stays root: {users}"
    assert "haproxy" in users
    assert lab.nodes.run(lb, f"stat -c '%a %U' {CERT_PATH}").stdout.strip() == "600 root"


def test_the_registry_answers_over_tls_and_no_engine_has_insecure_registries(lab: Lab) -> None:
    registry = lab.inventory.registry
    assert registry is not None
    ca = lab.state.ca_cert.read_bytes()
    engines = [n for n in lab.inventory.nodes if n.role is not Role.LB]
    for node in engines:
        assert lab.nodes.run(node, f"cat {trust_path(registry)}").stdout.encode() == ca, node.name
        answer = lab.nodes.run(
            node, f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {trust_path(registry)} https://{registry}/v2/"
        )
        assert answer.stdout == "200", f"{node.name}: {answer.stdout}"
        config = json.loads(lab.nodes.run(node, "docker info --format '{{json .RegistryConfig}}'").stdout)
        insecure = [name for name, index in (config.get("IndexConfigs") or {}).items() if not index.get("Secure")]
        assert insecure == [], f"{node.name} treats {insecure} as insecure"
        # Docker always lists 127.0.0.0/8; nothing else, and not the registry's network.
        assert config.get("InsecureRegistryCIDRs") == ["127.0.0.0/8"], node.name
        assert "insecure" not in lab.nodes.run(node, "cat /etc/docker/daemon.json").stdout, node.name
    # Plain HTTP gets nothing but Go's refusal.
    plain = lab.nodes.run(engines[0], f"curl -s -o /dev/null -w '%{{http_code}}' http://{registry}/v2/", check=False)
    assert plain.stdout == "400", plain.stdout


MANIFESTS = ", ".join(MANIFEST_TYPES)


def test_only_the_storage_node_pushes_and_the_stack_runs_images_by_digest(lab: Lab) -> None:
    """A worker node itself (its containers are kept off the storage node by DOCKER-USER) pushes its own
    image over the deployed tag of the app: refused, the public endpoint is read-only (405), as are a
    blob upload, a manifest put and a delete with curl, and the tag still names the deployed manifest;
    the writable endpoint is not on the network. The storage node pushes through its loopback, and a
    worker pulls that at once. The stack file and the services name the images by that digest."""
    storage, registry = lab.inventory.storage, lab.inventory.registry
    assert storage is not None and registry is not None
    manager, worker = lab.inventory.managers[0], lab.inventory.workers[0]
    spec = f"docker service inspect {STACK}_ui --format '{{{{.Spec.TaskTemplate.ContainerSpec.Image}}}}'"
    image = lab.nodes.run(manager, spec).stdout.strip()
    tagged, _, digest = image.partition("@")
    assert tagged.startswith(f"{registry}/swarmlab/app:") and digest.startswith("sha256:"), image
    tag = tagged.rpartition(":")[2]
    # Pinned in the stack file itself, not only by Docker's resolution of a tag at deploy time.
    assert f"    image: {image}\n" in lab.nodes.run(manager, f"cat {REMOTE_STACKS}/{STACK}.yml").stdout
    curl = f"curl -s -m 10 --cacert {trust_path(registry)}"
    head = f"{curl} -I -H 'Accept: {MANIFESTS}' https://{registry}/v2/swarmlab/app/manifests/{tag}"

    def served_digest() -> str:
        lines = lab.nodes.run(worker, head).stdout.replace("\r", "").splitlines()
        return next((line.split()[1] for line in lines if line.lower().startswith("docker-content-digest:")), "")

    assert served_digest() == digest
    # A worker's own image under the deployed tag: its push is refused.
    pushed = lab.nodes.run(
        worker,
        f"tar cf - --files-from /dev/null | docker import - {tagged} >/dev/null && "
        f"docker push {tagged} 2>&1; echo exit=$?; docker rmi {tagged} >/dev/null",
        timeout=120,
    ).stdout
    assert "exit=1" in pushed and "405" in pushed, pushed
    status = f"-o /dev/null -w '%{{http_code}}' https://{registry}/v2/swarmlab/app"
    attempts = {
        "upload": lab.nodes.run(worker, f"{curl} -X POST {status}/blobs/uploads/").stdout,
        "put": lab.nodes.run(
            worker,
            f"{curl} -X PUT -H 'Content-Type: {MANIFEST_TYPES[0]}' --data '{{}}' {status}/manifests/{tag}",
        ).stdout,
        "delete": lab.nodes.run(worker, f"{curl} -X DELETE {status}/manifests/{digest}").stdout,
    }
    assert attempts == dict.fromkeys(attempts, "405"), attempts
    assert served_digest() == digest, "the deployed tag names the deployed manifest still"
    # The writable endpoint listens on the storage node's loopback only: no other node reaches it.
    unreachable = lab.nodes.run(
        worker, f"curl -s -m 5 http://{storage.private_ip}:{REGISTRY_PUSH_PORT}/v2/; echo $?"
    ).stdout
    assert unreachable.strip() == "7", unreachable
    # The storage node pushes through it, and the public endpoint serves that at once.
    probe = f"pushprobe:{uuid.uuid4().hex[:8]}"
    try:
        lab.nodes.run(
            storage,
            f"tar cf - --files-from /dev/null | docker import - {PUSH_ENDPOINT}/swarmlab/{probe} >/dev/null && "
            f"docker push -q {PUSH_ENDPOINT}/swarmlab/{probe} && docker rmi {PUSH_ENDPOINT}/swarmlab/{probe}",
            timeout=120,
        )
        lab.nodes.run(worker, f"docker pull -q {registry}/swarmlab/{probe} && docker rmi {registry}/swarmlab/{probe}")
    finally:
        repositories = f"{REGISTRY_DATA_DIR}/docker/registry/v2/repositories/swarmlab"
        lab.nodes.run(storage, f"rm -rf {repositories}/pushprobe", check=False)
    # And the engines still pull the stack's images: by digest, from the read-only endpoint.
    assert digest in lab.nodes.run(worker, f"docker pull -q {image}").stdout


def test_the_nfs_export_squashes_root_and_lets_owners_write(lab: Lab) -> None:
    storage = lab.inventory.storage
    assert storage is not None
    # A new name each run: nfs-ganesha caches the entries of a directory removed behind its back.
    name = f"hardening-{uuid.uuid4().hex[:8]}"
    probe, url = f"/srv/swarmlab/data/{name}", f"nfs://{storage.private_ip}/data/{name}"
    lab.nodes.run(storage, f"mkdir -p {probe} && chown 4242:4242 {probe} && chmod 700 {probe} && echo x > /tmp/x")
    try:
        as_root = lab.nodes.run(storage, f"nfs-cp /tmp/x '{url}/root?version=4' 2>&1; ls {probe}", check=False)
        assert "NFS4ERR_ACCESS" in as_root.stdout and "root" not in as_root.stdout.splitlines()[-1:]
        owner = lab.nodes.run(
            storage, f"nfs-cp /tmp/x '{url}/owner?version=4&uid=4242&gid=4242' && stat -c %u {probe}/owner"
        )
        assert owner.stdout.strip().endswith("4242")
        config = lab.nodes.run(storage, "cat /etc/ganesha/ganesha.conf").stdout
        clients = sorted([*(w.private_ip for w in lab.inventory.workers), storage.private_ip])
        assert "Squash = Root_Squash;" in config and f"Clients = {', '.join(map(str, clients))};" in config
    finally:
        lab.nodes.run(storage, f"rm -rf {probe} /tmp/x", check=False)


def test_the_export_refuses_an_unprivileged_source_port(lab: Lab) -> None:
    """nfs-ganesha's PrivilegedPort: root's libnfs binds a port below 1024 and is answered; the same
    client run as nobody (an unprivileged port) is refused."""
    storage = lab.inventory.storage
    assert storage is not None
    url = f"nfs://{storage.private_ip}/data/?version=4"
    assert "PrivilegedPort = true;" in lab.nodes.run(storage, "cat /etc/ganesha/ganesha.conf").stdout
    as_root = lab.nodes.run(storage, f"nfs-ls '{url}' >/dev/null 2>&1 && echo answered || echo refused")
    assert as_root.stdout.strip() == "answered", "the probe itself must be able to succeed"
    unprivileged = lab.nodes.run(
        storage,
        f"setpriv --reuid=65534 --regid=65534 --clear-groups nfs-ls '{url}' >/dev/null 2>&1 && echo answered || echo refused",
    )
    assert unprivileged.stdout.strip() == "refused"


# --- tenant isolation: containers and the data tier ------------------------------------------------------

# Run inside a container: one line per target, "host:port open|refused|timeout|<errno name>".
REACH = (
    "import errno, socket, sys\n"
    "for target in sys.argv[1:]:\n"
    "    host, port = target.rsplit(':', 1)\n"
    "    try:\n"
    "        socket.create_connection((host, int(port)), timeout=5).close(); seen = 'open'\n"
    "    except ConnectionRefusedError: seen = 'refused'\n"
    "    except TimeoutError: seen = 'timeout'\n"
    "    except OSError as error: seen = errno.errorcode.get(error.errno or 0, str(error))\n"
    "    print(target, seen)\n"
)


def reach(lab: Lab, node: Node, container: str, targets: list[str]) -> dict[str, str]:
    """What a container sees connecting to each target (`container` is a `docker exec` target or a
    `docker run` image and options)."""
    out = lab.nodes.run(
        node, f"docker {container} python -c {shlex.quote(REACH)} {' '.join(targets)}", timeout=120
    ).stdout
    return dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)


def test_containers_on_a_worker_reach_neither_the_data_tier_nor_ssh_nor_metadata(lab: Lab, api: httpx.Client) -> None:
    """From the UI's running task and from a new container on the worker's default bridge: the storage
    node's NFS, registry and SSH, another node's SSH and Swarm ports and the metadata address are refused (REJECT: an
    answer, not a timeout); what tasks must reach (Prometheus scraping an engine and HAProxy) is open. The
    worker itself still pulls from the registry and reads the export, and the stack still writes."""
    storage = lab.inventory.storage
    assert storage is not None
    node = node_of(lab, "ui")
    other = next(n for n in lab.inventory.swarm_nodes if n.name != node.name)
    data = str(storage.private_ip)
    refused = [
        *(f"{data}:{port}" for port in (2049, 5000, 22)),
        *(f"{other.private_ip}:{port}" for port in (22, 2377, 7946)),
        "169.254.169.254:80",
    ]
    allowed = [f"{lab.inventory.managers[0].private_ip}:9323", f"{lab.inventory.lb.private_ip}:8405"]
    find = f"docker ps -q -f label=com.docker.swarm.service.name={STACK}_ui | head -n1"
    task = f"exec $({find})"
    image = lab.nodes.run(node, f"docker inspect --format '{{{{.Config.Image}}}}' $({find})")
    one_off = f"run --rm --network bridge {image.stdout.strip()}"
    for container in (task, one_off):
        seen = reach(lab, node, container, refused + allowed)
        assert {t: seen.get(t) for t in refused} == dict.fromkeys(refused, "refused"), (container, seen)
        assert {t: seen.get(t) for t in allowed} == dict.fromkeys(allowed, "open"), (container, seen)
    rules = lab.nodes.run(node, "iptables -w -S DOCKER-USER").stdout
    assert rules.count("swarmlab-isolation:") == 7, rules
    # The node's own traffic is not forwarded: it reaches the registry and the export.
    ca = trust_path(lab.inventory.registry or "")
    status = lab.nodes.run(node, f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {ca} https://{data}:5000/v2/")
    assert status.stdout.strip() == "200"
    listing = lab.nodes.run(node, f"nfs-ls 'nfs://{data}/data/postgres/?version=4&uid=999&gid=999'").stdout
    assert "PG_VERSION" in listing
    # And the stack still writes: a registration lands in the database.
    email = fresh_email()
    eligible(api, email)
    api.post("/getotp", json={"email": email}).raise_for_status()
    verified = api.post("/authen", json={"email": email, "otp": otp_from(mails(lab, email)[-1])})
    verified.raise_for_status()
    body = {"firstname": "Mary", "lastname": "Jackson", "email": email, "proof": verified.json()["proof"]}
    api.post("/register", json=body).raise_for_status()
    assert sql(lab, f"SELECT lastname FROM student WHERE email = '{email}'") == "Jackson"


def test_published_ports_answer_haproxy_only(lab: Lab) -> None:
    """Prometheus' port (8095), the lab's mail sink (8025) and the cluster map's (9080) answer the lb node,
    and refuse another node's own process and a container on another node (`edge-ports`, `map-port`)."""
    fab("cluster-map")  # the map is not part of deploy-stack: start it (no change if it runs)
    targets = [f"{node_of(lab, 'prometheus').private_ip}:8095", f"{node_of(lab, 'mailsink').private_ip}:8025"]
    targets.append(f"{lab.inventory.managers[0].private_ip}:9080")
    hosts = {t.split(":")[0] for t in targets}
    client = next(n for n in lab.inventory.workers if str(n.private_ip) not in hosts)
    probe = "curl -s -o /dev/null -m 5 -w '%{{http_code}}' http://{target}/ || true"
    for target in targets:
        answer = lab.nodes.run(lab.inventory.lb, probe.format(target=target)).stdout.strip()
        assert answer not in ("", "000"), f"the lb node got no HTTP answer from {target}"
        refused = lab.nodes.run(client, f"curl -s -o /dev/null -m 5 http://{target}/; echo $?").stdout.strip()
        assert refused == "7", f"{client.name} reached {target} (curl exit {refused}; 7 is refused)"
    spec = f"docker service inspect {STACK}_ui --format '{{{{.Spec.TaskTemplate.ContainerSpec.Image}}}}'"
    image = lab.nodes.run(lab.inventory.managers[0], spec)  # by tag (the digest cut): the worker pulls it
    one_off = f"run --rm --network bridge {image.stdout.strip().split('@')[0]}"
    seen = reach(lab, client, one_off, targets)
    assert seen == dict.fromkeys(targets, "refused"), seen


def test_a_changed_host_key_stops_the_task_with_the_host_named(lab: Lab, tmp_path: Path) -> None:
    """The managers `fab status` asks present keys other than the pinned ones: refused, each named."""
    manager = lab.inventory.managers[0]
    impostor = new_key_pair("impostor").public_openssh.split()[1]
    known = Path(lab.inventory.ssh.known_hosts or "").read_text().splitlines()
    managers = tuple(f"{m.private_ip} " for m in lab.inventory.managers)
    forged = [f"{line.rsplit(' ', 1)[0]} {impostor}" if line.startswith(managers) else line for line in known]
    (tmp_path / "known_hosts").write_text("\n".join(forged) + "\n")
    document = json.loads(lab.inventory.model_dump_json()) | {"provider": "static"}
    document["ssh"]["known_hosts"] = str(tmp_path / "known_hosts")
    (tmp_path / "inventory.json").write_text(json.dumps(document))
    done = fab("status", "--target", str(tmp_path / "inventory.json"), check=False)
    assert done.returncode != 0
    assert f"on {manager.name}:" in done.stderr and "host key is not the pinned one" in done.stderr
    # And an inventory that pins nothing is refused before any connection.
    document["ssh"]["known_hosts"] = None
    (tmp_path / "inventory.json").write_text(json.dumps(document))
    unpinned = fab("status", "--target", str(tmp_path / "inventory.json"), check=False)
    assert unpinned.returncode != 0 and "pins no host key" in unpinned.stderr


def test_a_node_that_stops_answering_mid_command_fails_named_within_the_timeout(lab: Lab) -> None:
    worker = lab.inventory.workers[-1]
    container = docker.from_env().containers.get(f"swarmlab-{lab.config.cluster}-{worker.name}")
    lab.nodes.run(worker, "true")  # the connection is open before the node freezes
    pause = threading.Timer(1.0, container.pause)
    pause.start()
    started = time.monotonic()
    try:
        with pytest.raises(CommandFailed) as raised:
            lab.nodes.run(worker, "sleep 20", timeout=5)
        assert time.monotonic() - started < 15
        assert raised.value.host == worker.name and "no answer within 5s" in str(raised.value)
    finally:
        pause.join()
        container.unpause()
    lab.nodes.run(worker, "true")  # and it answers again once it does


def test_lab_down_keeps_away_from_other_targets_of_the_same_name(lab: Lab, tmp_path: Path) -> None:
    """A static and a Pulumi target named like the lab keep their own state: planted now for the
    session lab (the fixture's finalizer checks them after its lab-down), and checked at once on a
    lab name that has no containers."""
    # (Only a Pulumi one for the session lab: the static-target test uses static/<cluster> itself.)
    PLANTED.append(plant(lab.config.state(provider="pulumi").root))
    env = {"SWARMLAB_CLUSTER": "citsecdown"}
    config = lab.config.model_copy(update={"cluster": "citsecdown"})
    own = config.state(provider="lab")
    own.inventory.parent.mkdir(parents=True, exist_ok=True)
    own.inventory.write_text("{}")
    own.credentials.write_text("{}")
    others = [plant(config.state(provider=p).root) for p in ("static", "pulumi")]
    try:
        fab("lab-down", env=env)
        assert not own.inventory.exists() and not own.credentials.exists()
        for directory, contents in others:
            assert snapshot(directory) == contents, f"lab-down touched {directory}"
    finally:
        for directory in (own.root, *(d for d, _ in others)):
            shutil.rmtree(directory, ignore_errors=True)
    assert LAB_ENV["SWARMLAB_CLUSTER"] == lab.config.cluster


def plant(directory: Path) -> tuple[Path, dict[str, bytes]]:
    """A fake target's state directory: credentials and a CA, as a Pulumi or static target keeps them."""
    (directory / "tls").mkdir(parents=True, exist_ok=True)
    (directory / "credentials").write_text('{"db_password": "not the lab\'s"}')
    (directory / "tls" / "ca.crt").write_text("a CA of another target")
    return directory, snapshot(directory)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# --- the stores' own credentials: a password per Redis, a broker user per service -------------------


def test_each_redis_answers_only_with_its_own_password(lab: Lab) -> None:
    credentials = json.loads(lab.state.credentials.read_text())
    for service, secret in REDIS_SECRETS.items():
        anonymous = in_service(lab, service, "redis-cli -h 127.0.0.1 ping 2>&1; redis-cli -h 127.0.0.1 get x 2>&1")
        assert anonymous.count("NOAUTH") == 2, f"{service} answers without a password: {anonymous}"
        wrong = in_service(lab, service, "REDISCLI_AUTH=not-the-password redis-cli -h 127.0.0.1 ping 2>&1")
        assert "WRONGPASS" in wrong, wrong
        other = next(s for s in REDIS_SECRETS.values() if s != secret)
        assert "WRONGPASS" in in_service(
            lab, service, f"REDISCLI_AUTH={shlex.quote(credentials[other])} redis-cli -h 127.0.0.1 ping 2>&1"
        ), "each Redis has a password of its own"
        assert redis_cli(lab, service, "ping").strip() == "PONG"
        # The image's healthcheck authenticates (Swarm's own verdict is the converged stack), and the
        # password is in a private file only: not on the server's command line, not in its environment.
        assert in_service(lab, service, "/usr/local/bin/healthcheck && echo healthy").strip() == "healthy"
        seen = in_service(lab, service, "tr '\\0' ' ' < /proc/1/cmdline; echo; tr '\\0' ' ' < /proc/1/environ")
        assert "redis-server" in seen and credentials[secret] not in seen
        assert in_service(lab, service, "stat -c '%a %U' /run/redis-conf/redis.conf").strip() == "600 redis"


WORKERS = ("otp", "student", "enroll", "email", "email_otp")


def probe_broker(lab: Lab, service: str, *operations: str) -> dict[str, str]:
    """tests/lab/broker_probe.py run in the service's container, as the service's own broker user."""
    node = node_of(lab, service)
    lab.nodes.put(node, Path(__file__).with_name("broker_probe.py"), "/tmp/broker_probe.py")
    find = f"docker ps -q -f label=com.docker.swarm.service.name={STACK}_{service} | head -n1"
    args = " ".join(shlex.quote(o) for o in operations)
    out = lab.nodes.run(node, f"docker exec -i $({find}) python - {args} < /tmp/broker_probe.py", timeout=60).stdout
    found: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return found


def test_the_broker_has_one_user_per_service_and_no_guest(lab: Lab) -> None:
    listed = in_service(lab, "rabbitmq", "rabbitmqctl -q list_users --no-table-headers").split("\n")
    assert sorted(line.split("\t")[0] for line in listed if line.strip()) == sorted(["api", *WORKERS])
    definitions = in_service(lab, "rabbitmq", "stat -c '%a %U' /etc/rabbitmq/private/definitions.json")
    assert definitions.strip() == "600 rabbitmq"


def test_a_worker_may_serve_only_its_own_queue(lab: Lab) -> None:
    mine = f"probe-{uuid.uuid4().hex[:8]}"
    found = probe_broker(
        lab,
        "otp",
        "declare:rpc.otp",  # what it does: its own queue, replies through rpc.replies
        "publish:rpc.replies:nobody",
        "declare:rpc.student",  # another service's queue: neither declare, take nor put a request into it
        "consume:rpc.student",
        "get:rpc.email",
        "publish::rpc.student",
        f"declare:{mine}",  # nor any queue or exchange of its own making
        "declare-exchange:rpc.replies",
        f"reply-queue:rpc.reply.{mine}",
    )
    assert found == {
        "declare:rpc.otp": "ok",
        "publish:rpc.replies:nobody": "ok",
        "declare:rpc.student": "refused",
        "consume:rpc.student": "refused",
        "get:rpc.email": "refused",
        "publish::rpc.student": "refused",
        f"declare:{mine}": "refused",
        "declare-exchange:rpc.replies": "refused",
        f"reply-queue:rpc.reply.{mine}": "refused",
    }


def test_the_api_may_call_workers_but_not_take_their_requests(lab: Lab) -> None:
    mine = f"probe-{uuid.uuid4().hex[:8]}"
    found = probe_broker(
        lab,
        "api",
        f"reply-queue:rpc.reply.{mine}",  # what it does: a reply queue bound to rpc.replies, requests out
        "declare:rpc.otp",
        f"publish::{mine}",
        "consume:rpc.otp",  # but it may not take a worker's requests, nor forge replies
        "get:rpc.student",
        "publish:rpc.replies:nobody",
        "declare:rpc.enroll",  # a service it never calls
        f"declare:{mine}",
    )
    assert found == {
        f"reply-queue:rpc.reply.{mine}": "ok",
        "declare:rpc.otp": "ok",
        f"publish::{mine}": "ok",
        "consume:rpc.otp": "refused",
        "get:rpc.student": "refused",
        "publish:rpc.replies:nobody": "refused",
        "declare:rpc.enroll": "refused",
        f"declare:{mine}": "refused",
    }


def test_the_edge_sends_the_security_headers_and_no_banner(lab: Lab) -> None:
    """On the UI and on the API: a Content-Security-Policy that forbids framing, nosniff, a referrer
    policy; no Server and no X-Served-By (the services send them; HAProxy strips them)."""
    with httpx.Client(timeout=10, verify=lab.tls) as client:
        for path in ("/", "/api/healthz"):
            answer = client.get(lab.url + path)
            assert answer.status_code == 200, path
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], path
            assert "unsafe-inline" not in answer.headers["content-security-policy"], path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["referrer-policy"] == "same-origin", path
            assert "server" not in answer.headers and "x-served-by" not in answer.headers, (path, answer.headers)
        # The UI's style is a file the policy allows ('self'), not inline.
        style = client.get(lab.url + "/style.css")
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
        # The API's Swagger page keeps a policy of its own: its one inline script by hash.
        docs = client.get(lab.url + "/api/docs")
        assert docs.status_code == 200 and "'sha256-" in docs.headers["content-security-policy"]


def test_a_body_sent_a_byte_at_a_time_is_cut_within_the_body_timeout(lab: Lab) -> None:
    """One byte of a 20-byte body every 20 s: HAProxy answers 408 before the second byte is due
    (`timeout http-request` 10 s with `option http-buffer-request`). At most 3 bytes, each wait
    capped at 20 s: the test takes a minute at worst."""
    host = urlsplit(lab.url).hostname or "127.0.0.1"
    raw = socket.create_connection((str(lab.config.bind_address), lab.config.https_port), timeout=20)
    with lab.tls.wrap_socket(raw, server_hostname=host) as tls:
        head = (
            f"POST /api/getotp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 20\r\nConnection: close\r\n\r\n"
        )
        tls.sendall(head.encode())
        sent, answer = 0, b""
        for _ in range(3):
            tls.sendall(b"{")
            sent += 1
            try:
                answer = tls.recv(4096)  # waits at most 20 s: the socket's timeout
            except TimeoutError:
                continue  # nothing yet: the next byte is due
            break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert sent == 1, f"HAProxy waited through {sent} bytes at 20 s each"


def test_the_services_believe_x_forwarded_for_from_haproxy_only(lab: Lab) -> None:
    """The UI believes X-Forwarded-For from the lb node only; the API also from the overlays (the UI
    passes the user's address on)."""
    manager = lab.inventory.managers[0]
    lb = str(lab.inventory.lb.private_ip)
    expected = {"ui": lb, "api": f"{lb},{lab.config.overlay_pool}"}
    for service, allowed in expected.items():
        spec = lab.nodes.run(
            manager,
            f"docker service inspect {STACK}_{service} --format '{{{{json .Spec.TaskTemplate.ContainerSpec.Env}}}}'",
        )
        assert f"FORWARDED_ALLOW_IPS={allowed}" in json.loads(spec.stdout), service


# --- OTP and session abuse ------------------------------------------------------------------------------


def test_a_replayed_getotp_key_sends_one_mail(lab: Lab, api: httpx.Client) -> None:
    email = fresh_email()
    eligible(api, email)
    key = {"Idempotency-Key": f"replayed-{uuid.uuid4().hex}"}
    replies = [api.post("/getotp", json={"email": email}, headers=key) for _ in range(8)]
    assert [(r.status_code, r.json()["results"]) for r in replies] == [(200, "sent")] * 8
    time.sleep(3)  # any second mail would be in the sink by now
    sent = mails(lab, email)
    assert len(sent) == 1, f"{len(sent)} mails for one idempotency key"
    verified = api.post("/authen", json={"email": email, "otp": otp_from(sent[0])})
    assert verified.status_code == 200, "the one code mailed is the live one"


def test_cookieless_pages_store_no_session(lab: Lab) -> None:
    policy = redis_cli(lab, "redis-session", "CONFIG GET maxmemory-policy").split()
    assert policy[-1] == "volatile-ttl", policy
    assert int(redis_cli(lab, "redis-session", "CONFIG GET maxmemory").split()[-1]) > 0
    before = int(redis_cli(lab, "redis-session", "DBSIZE").strip())
    with httpx.Client(base_url=lab.url, verify=lab.tls, timeout=30) as browser:
        for _ in range(50):
            browser.cookies.clear()
            page = browser.get("/")
            assert page.status_code == 200 and 'name="csrf"' in page.text
    assert int(redis_cli(lab, "redis-session", "DBSIZE").strip()) == before


def test_the_owner_still_authenticates_after_an_anonymous_clients_six_wrong_codes(lab: Lab, api: httpx.Client) -> None:
    email = fresh_email()
    eligible(api, email)
    with httpx.Client(base_url=lab.url, verify=lab.tls, timeout=30, follow_redirects=True) as mallory:
        # Someone else asks for the owner's OTP in the UI (the owner gets the mail), then guesses.
        sent = mallory.post("/", data={"email": email, "csrf": csrf(mallory.get("/"))})
        assert sent.status_code == 200 and 'name="otp"' in sent.text, sent.text[:300]
        code = otp_from(mails(lab, email)[-1])
        wrong = "000000" if code != "000000" else "111111"
        answers = []
        for _ in range(6):
            refused = mallory.post("/authen", data={"otp": wrong, "csrf": csrf(sent)})
            answers.append((refused.status_code, refused.headers.get("x-error-code")))
        assert answers == [(400, "invalid_otp")] * 5 + [(429, "locked")]
    with httpx.Client(base_url=lab.url, verify=lab.tls, timeout=30, follow_redirects=True) as owner:
        page = owner.post("/", data={"email": email, "csrf": csrf(owner.get("/"))})
        assert page.status_code == 200 and 'name="otp"' in page.text, page.text[:300]
        verified = owner.post("/authen", data={"otp": code, "csrf": csrf(page)})
        assert verified.status_code == 200 and 'name="firstname"' in verified.text, verified.text[:300]
    assert len(mails(lab, email)) == 1, "within the resend window the owner's request mails nothing new"
