"""Every broker at once (registration/common/brokers.py): connections kept in step with DNS, calls
through one broker and repeated through another, a worker's queue consumed on each."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar, cast

import aio_pika
import pytest
from pydantic import SecretStr

from registration.common import brokers, rpc
from registration.common.brokers import Brokers, PooledRpcClient, PooledRpcServer
from registration.common.deadline import Deadline
from registration.common.rpc import RpcTimeout, RpcUnavailable, call_with_retry
from registration.common.settings import RabbitSettings

SETTINGS = RabbitSettings(RABBITMQ_PASSWORD=SecretStr("x"))


class Connection:
    def __init__(self, address: str) -> None:
        self.address = address
        self.is_closed = False

    async def close(self) -> None:
        self.is_closed = True


class Dns:
    """What the name resolves to, changed by the test; ``None``: the resolution fails."""

    def __init__(self, *addresses: str) -> None:
        self.addresses: set[str] | None = set(addresses)

    async def resolve(self, host: str, port: int) -> set[str]:
        assert (host, port) == ("rabbitmq", 5672)
        if self.addresses is None:
            raise OSError("Temporary failure in name resolution")
        return set(self.addresses)


def followed(dns: Dns, refused: set[str] | None = None) -> tuple[Brokers, list[str]]:
    events: list[str] = []
    refused = refused or set()

    async def open_one(address: str) -> Any:
        if address in refused:
            raise ConnectionRefusedError(address)
        return Connection(address)

    async def added(address: str, connection: Any) -> None:
        events.append(f"+{address}")

    async def removed(address: str) -> None:
        events.append(f"-{address}")

    found = Brokers(SETTINGS, "test", on_added=added, on_removed=removed, resolve=dns.resolve, open_one=open_one)
    return found, events


def test_the_connections_follow_what_the_name_resolves_to() -> None:
    dns = Dns("10.0.1.5", "10.0.1.6")
    found, events = followed(dns)

    async def run() -> None:
        await found.refresh()
        assert sorted(found.connections) == ["10.0.1.5", "10.0.1.6"]
        old = cast(Connection, found.connections["10.0.1.5"])
        # the broker of 10.0.1.5 moved to another worker: a new address, the old one gone from DNS
        dns.addresses = {"10.0.1.6", "10.0.1.9"}
        await found.refresh()
        assert sorted(found.connections) == ["10.0.1.6", "10.0.1.9"] and old.is_closed
        # a failed resolution is no proof that a broker left: nothing is dropped
        dns.addresses = None
        await found.refresh()
        assert sorted(found.connections) == ["10.0.1.6", "10.0.1.9"]
        await found.close()
        assert found.connections == {}

    asyncio.run(run())
    assert events == ["+10.0.1.5", "+10.0.1.6", "-10.0.1.5", "+10.0.1.9", "-10.0.1.6", "-10.0.1.9"]


def test_a_refused_broker_is_tried_again_on_the_next_refresh_and_one_is_enough_to_start() -> None:
    refused = {"10.0.1.6"}
    found, events = followed(Dns("10.0.1.5", "10.0.1.6"), refused)

    async def run() -> None:
        await found.refresh()  # one broker is enough: no error
        assert list(found.connections) == ["10.0.1.5"]
        refused.clear()
        await found.refresh()
        assert sorted(found.connections) == ["10.0.1.5", "10.0.1.6"]

    asyncio.run(run())
    assert events == ["+10.0.1.5", "+10.0.1.6"]


def test_no_broker_at_all_raises_the_last_error() -> None:
    found, _ = followed(Dns("10.0.1.5"), {"10.0.1.5"})
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(found.refresh())
    nameless, _ = followed(Dns())
    with pytest.raises(ConnectionError, match="rabbitmq resolves to no address"):
        asyncio.run(nameless.refresh())


def test_start_retries_until_its_connect_timeout_then_raises_the_error_itself(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[float] = []

    async def refuse(**kwargs: Any) -> Any:
        assert kwargs["host"] == "10.0.1.5", "each broker by its own address"
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(aio_pika, "connect_robust", refuse)
    settings = RabbitSettings(RABBITMQ_PASSWORD=SecretStr("x"), RABBITMQ_CONNECT_TIMEOUT=0.3)
    found = Brokers(settings, "test", resolve=Dns("10.0.1.5").resolve)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(ConnectionRefusedError):
        asyncio.run(found.start(retry_delay=0.05, max_delay=0.1))
    # Pauses of 0.05, 0.075, then 0.1 s; it gives up when the next pause would end past the timeout.
    assert time.monotonic() - began >= 0.3 - 0.1 and len(attempts) >= 2
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("RabbitMQ at")]
    assert logged == ["RabbitMQ at rabbitmq:5672 not reachable (ConnectionRefusedError); retrying in 0s"] * (
        len(attempts) - 1
    )


# --- the API's side -------------------------------------------------------------------------------


class FakeClient:
    """An RpcClient on one broker: answers, or fails as that broker does."""

    outcomes: ClassVar[dict[str, Any]] = {}
    calls: ClassVar[list[str]] = []

    def __init__(self, connection: Connection, default_timeout: float = 10.0) -> None:
        self.address = connection.address
        self.connection = connection
        self.closed = False

    async def start(self) -> None:
        pass

    async def close(self, reason: Exception | None = None) -> None:
        self.closed = True
        self.reason = reason

    @property
    def connected(self) -> bool:
        return not self.connection.is_closed

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        FakeClient.calls.append(self.address)
        outcome = FakeClient.outcomes.get(self.address, "ok")
        if isinstance(outcome, Exception):
            raise outcome
        return f"{outcome} via {self.address}"


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> PooledRpcClient:
    monkeypatch.setattr(brokers, "RpcClient", FakeClient)
    FakeClient.outcomes, FakeClient.calls = {}, []
    return PooledRpcClient()


def test_calls_take_turns_over_the_connected_brokers(pool: PooledRpcClient) -> None:
    async def run() -> list[Any]:
        for address in ("10.0.1.5", "10.0.1.6"):
            await pool.add(address, cast(Any, Connection(address)))
        return [await pool.call("otp", "get") for _ in range(4)]

    answers = asyncio.run(run())
    assert sorted(answers) == ["ok via 10.0.1.5"] * 2 + ["ok via 10.0.1.6"] * 2


def test_a_broker_that_failed_a_call_is_avoided_while_another_answers(pool: PooledRpcClient) -> None:
    now = [100.0]
    pool._clock = lambda: now[0]
    FakeClient.outcomes["10.0.1.5"] = RpcUnavailable("connection lost", maybe_delivered=True)

    async def run() -> None:
        for address in ("10.0.1.5", "10.0.1.6"):
            await pool.add(address, cast(Any, Connection(address)))
        failures = 0
        for _ in range(6):
            try:
                await pool.call("otp", "get")
            except RpcUnavailable:
                failures += 1
        assert failures == 1, "only the first call goes through the lost broker"
        assert FakeClient.calls.count("10.0.1.5") == 1
        # once the broker is back and the pause is over, it takes its turn again
        del FakeClient.outcomes["10.0.1.5"]
        now[0] += brokers.AVOID_AFTER_FAILURE
        assert {await pool.call("otp", "get") for _ in range(2)} == {"ok via 10.0.1.5", "ok via 10.0.1.6"}

    asyncio.run(run())


def test_when_every_broker_failed_lately_calls_still_go_out(pool: PooledRpcClient) -> None:
    FakeClient.outcomes["10.0.1.5"] = RpcTimeout("no answer")

    async def run() -> None:
        await pool.add("10.0.1.5", cast(Any, Connection("10.0.1.5")))
        for _ in range(2):
            with pytest.raises(RpcTimeout):
                await pool.call("otp", "get")
        await pool.remove("10.0.1.5")
        with pytest.raises(RpcUnavailable, match="no broker connected"):
            await pool.call("otp", "get")

    asyncio.run(run())
    assert FakeClient.calls == ["10.0.1.5", "10.0.1.5"]


def test_a_call_lost_with_its_broker_is_repeated_through_the_other_one(pool: PooledRpcClient) -> None:
    """What make chaos's kill-broker-worker needs: the repeat goes elsewhere, within the deadline."""
    FakeClient.outcomes["10.0.1.6"] = RpcUnavailable("connection lost", maybe_delivered=True)

    async def run() -> Any:
        for address in ("10.0.1.6", "10.0.1.7"):
            await pool.add(address, cast(Any, Connection(address)))
        return await call_with_retry(
            pool, "student", "register", deadline=Deadline(5.0), attempt_timeout=1.0, safe=True, delay=lambda _: 0.0
        )

    assert asyncio.run(run()) == "ok via 10.0.1.7"
    assert FakeClient.calls == ["10.0.1.6", "10.0.1.7"]


def test_the_calls_waiting_on_a_broker_that_left_dns_are_failed_as_repeatable(pool: PooledRpcClient) -> None:
    """Swarm takes a broker out of DNS before it stops it (fab maintain-nodes' drains): the calls still
    waiting on it must be repeated elsewhere, not answered 502 (a plain RpcError, which nobody repeats)."""

    async def run() -> FakeClient:
        await pool.add("10.0.1.5", cast(Any, Connection("10.0.1.5")))
        client = cast(FakeClient, pool._clients["10.0.1.5"])
        await pool.remove("10.0.1.5")
        return client

    client = asyncio.run(run())
    assert client.closed and isinstance(client.reason, RpcUnavailable) and client.reason.maybe_delivered
    assert rpc._may_repeat(client.reason, safe=True)


def test_a_closed_connection_is_not_chosen(pool: PooledRpcClient) -> None:
    async def run() -> None:
        dead = Connection("10.0.1.5")
        await pool.add("10.0.1.5", cast(Any, dead))
        await pool.add("10.0.1.6", cast(Any, Connection("10.0.1.6")))
        dead.is_closed = True  # reconnecting: aio-pika's robust connection is closed meanwhile
        assert {pool.choose() for _ in range(4)} == {"10.0.1.6"}

    asyncio.run(run())


# --- the worker's side ----------------------------------------------------------------------------


class FakeServer:
    def __init__(self, connection: Connection, service: str, handlers: Any, **_: Any) -> None:
        self.connection = connection
        self.consuming = True
        self.stopped: float | None = None

    async def start(self) -> None:
        pass

    async def ensure_consuming(self) -> bool:
        return self.consuming

    async def stop(self, grace: float = 10.0) -> None:
        self.stopped = grace


def test_a_worker_is_healthy_while_it_consumes_on_any_broker_and_stops_on_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(brokers, "RpcServer", FakeServer)
    server = PooledRpcServer("otp", {})

    async def run() -> None:
        assert not await server.ensure_consuming(), "no broker yet: not healthy"
        for address in ("10.0.1.5", "10.0.1.6"):
            await server.add(address, cast(Any, Connection(address)))
        first, second = (cast(FakeServer, s) for s in server._servers.values())
        first.consuming = False
        assert await server.ensure_consuming()
        second.consuming = False
        assert not await server.ensure_consuming()
        await server.remove("10.0.1.5")
        assert first.stopped == 0.0  # its broker is gone: nothing to wait for
        await server.stop(grace=3.0)
        assert second.stopped == 3.0
        await server.add("10.0.1.9", cast(Any, Connection("10.0.1.9")))
        assert server._servers == {}, "a broker found while draining takes nothing"

    asyncio.run(run())


def test_resolve_addresses_returns_each_address_once() -> None:
    found = asyncio.run(brokers.resolve_addresses("localhost", 5672))
    assert found and found <= {"127.0.0.1", "::1"}
