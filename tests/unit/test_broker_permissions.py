"""The broker's users and permissions as rendered (workloads/registration/config/rabbitmq-definitions.json.j2):
each service that talks to RabbitMQ has its own user, allowed exactly what its code does and nothing that
would let it read or write another service's traffic.

RabbitMQ checks an AMQP operation against the user's three regular expressions for the vhost, each
matched anywhere in the resource's name (Erlang's re:run, as Python's re.search):
https://www.rabbitmq.com/docs/access-control#permissions. The default exchange is `amq.default` there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.config import parse_config
from cluster.lab.layout import lab_inventory
from cluster.state import StatePaths
from cluster.tasks.deploy import config_contents
from cluster.workload import load_workload
from registration.common.rpc import REPLY_EXCHANGE, queue_name, reply_queue_name
from tests.unit.test_registration_stack import rendered

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXCHANGE = "amq.default"
WORKERS = ("otp", "student", "enroll", "email", "email_otp")
MARKER = re.compile(r"^@@(/run/secrets/[a-z_]+)@@$")


def definitions(environment: str = "lab") -> dict[str, Any]:
    """The definitions template exactly as the deployer renders it into the rabbitmq_definitions config."""
    workload = load_workload("registration", environment)
    inventory = lab_inventory(parse_config({}), StatePaths(Path("/state")))
    _, content = config_contents(inventory, workload)["rabbitmq_definitions"]
    found: dict[str, Any] = json.loads(content)
    return found


@dataclass(frozen=True)
class User:
    """One user's permissions on the vhost, and the AMQP operations they allow."""

    configure: str
    write: str
    read: str

    def declare(self, resource: str) -> bool:  # queue.declare, exchange.declare (and their delete)
        return re.search(self.configure, resource) is not None

    def publish(self, exchange: str) -> bool:  # basic.publish
        return re.search(self.write, exchange) is not None

    def consume(self, queue: str) -> bool:  # basic.consume, basic.get, queue.purge
        return re.search(self.read, queue) is not None

    def bind(self, queue: str, exchange: str) -> bool:  # queue.bind: write on the queue, read on the exchange
        return re.search(self.write, queue) is not None and re.search(self.read, exchange) is not None


def users(environment: str = "lab") -> dict[str, User]:
    found = {}
    for p in definitions(environment)["permissions"]:
        assert p["vhost"] == "/"
        assert p["user"] not in found, f"{p['user']} has two permission entries"
        found[p["user"]] = User(p["configure"], p["write"], p["read"])
    return found


def api_calls() -> set[str]:
    """The services whose RPC methods the API's code calls (`call(rpc_, <deadline>, "service", ...)`)."""
    source = "\n".join(path.read_text() for path in sorted((ROOT / "services/registration/api").glob("*.py")))
    called = set(re.findall(r"call\(\s*rpc_,\s*[\w()]+,\s*\"(\w+)\"", source))
    assert called, "no RPC call found in the API's code: the pattern above is out of date"
    return called


def test_definitions_are_json_with_the_vhost_the_users_and_the_replies_exchange() -> None:
    found = definitions()
    assert found == definitions("prod")
    assert found["vhosts"] == [{"name": "/"}]
    assert [u["name"] for u in found["users"]] == ["api", *WORKERS]
    assert all(u["tags"] == "" for u in found["users"]), "no user may manage the broker"
    assert "guest" not in {u["name"] for u in found["users"]}
    assert found["exchanges"] == [
        {
            "name": REPLY_EXCHANGE,
            "vhost": "/",
            "type": "direct",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        }
    ]
    assert set(users()) == {u["name"] for u in found["users"]}


def test_every_pattern_is_anchored_at_both_ends() -> None:
    # RabbitMQ matches anywhere in the name: "rpc\.otp" alone would also grant "rpc.otp.evil" or "x.rpc.otp".
    for name, user in users().items():
        for pattern in (user.configure, user.write, user.read):
            assert pattern.startswith("^") and pattern.endswith("$"), (name, pattern)
            re.compile(pattern)


@pytest.mark.parametrize("worker", WORKERS)
def test_a_worker_may_serve_its_own_queue_and_reply_and_nothing_else(worker: str) -> None:
    user = users()[worker]
    own = queue_name(worker)
    # what RpcServer does: declare its durable queue, consume it, publish replies to rpc.replies
    assert user.declare(own) and user.consume(own) and user.publish(REPLY_EXCHANGE)
    for other in (w for w in WORKERS if w != worker):
        theirs = queue_name(other)
        assert not user.declare(theirs), f"{worker} may declare or delete {theirs}"
        assert not user.consume(theirs), f"{worker} may take {other}'s requests"
        assert not user.bind(theirs, REPLY_EXCHANGE), f"{worker} may route replies into {theirs}"
    # the default exchange reaches every queue by name, so a worker may not publish there at all
    assert not user.publish(DEFAULT_EXCHANGE)
    for exchange in ("amq.direct", "amq.topic", "amq.fanout", "amq.headers", ""):
        assert not user.publish(exchange), exchange
    reply_queue = reply_queue_name()
    assert not user.consume(reply_queue) and not user.declare(reply_queue), "replies are the API's to read"
    for name in ("anything", f"{own}.extra", f"x.{own}", REPLY_EXCHANGE, "amq.gen-abc"):
        assert not user.declare(name), f"{worker} may declare {name}"
    assert not user.bind(own, REPLY_EXCHANGE) and not user.bind(own, "amq.direct")


def test_the_api_may_call_the_services_it_calls_and_read_only_its_replies() -> None:
    user = users()["api"]
    reply_queue = reply_queue_name()
    # what RpcClient does: its exclusive reply queue, bound to rpc.replies under its own name, consumed...
    assert user.declare(reply_queue) and user.bind(reply_queue, REPLY_EXCHANGE) and user.consume(reply_queue)
    # ...and each request queue declared (durable, so that requests wait for a worker) and published to
    calls = api_calls()
    assert calls == {"otp", "student", "email", "email_otp"}
    for service in calls:
        assert user.declare(queue_name(service)), service
    assert user.publish(DEFAULT_EXCHANGE)
    for service in set(WORKERS) - calls:
        assert not user.declare(queue_name(service)), f"the API never calls {service}"
    for service in WORKERS:
        assert not user.consume(queue_name(service)), f"the API may take {service}'s requests"
        assert not user.bind(queue_name(service), REPLY_EXCHANGE)
    # it may neither forge replies nor declare (or delete) the exchange, nor anything else
    assert not user.publish(REPLY_EXCHANGE) and not user.declare(REPLY_EXCHANGE)
    for name in ("anything", "rpc.reply", "rpc.replies", "amq.gen-abc", f"x.{reply_queue}"):
        assert not user.declare(name), name
    for exchange in ("amq.direct", "amq.topic", "amq.fanout", "amq.headers"):
        assert not user.publish(exchange), exchange


@pytest.mark.parametrize(("environment", "mode"), [("lab", "shared-dir"), ("prod", "nfs")])
def test_each_broker_client_in_the_stack_has_its_own_user_and_password_file(environment: str, mode: str) -> None:
    _, stack = rendered(environment, mode)
    services = stack["services"]
    passwords = {}
    for user in definitions(environment)["users"]:
        marker = MARKER.match(user["password"])
        assert marker, f"{user['name']}'s password must be a secret file's marker, not a value"
        passwords[user["name"]] = marker.group(1)
    clients = {name: s["environment"] for name, s in services.items() if "RABBITMQ_HOST" in s.get("environment", {})}
    assert set(clients) == {"api", *WORKERS}
    assert {env["RABBITMQ_USER"] for env in clients.values()} == set(passwords), "one user per client"
    generated = set(load_workload("registration", environment).manifest.secrets.generated)
    for name, env in clients.items():
        user = env["RABBITMQ_USER"]
        assert user == name, "a worker's user is named after its service, whose queue is rpc.<service>"
        secret = passwords[user].removeprefix("/run/secrets/")
        assert env["RABBITMQ_PASSWORD_FILE"] == passwords[user]
        assert secret in generated
        holders = {n for n, s in services.items() if secret in s.get("secrets", [])}
        assert holders == {name, "rabbitmq"}, f"{secret} is held by {holders}"
    assert "rabbitmq_password" not in generated, "the shared broker password is gone"
