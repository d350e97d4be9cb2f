from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, cast

import aio_pika
import pytest

from registration.common.rpc import RpcClient, RpcRemoteError, RpcServer, RpcTimeout, RpcUnavailable


async def add(a: int, b: int) -> int:
    return a + b


async def boom() -> None:
    raise RuntimeError("database password is hunter22")


def server() -> RpcServer:
    return RpcServer(cast(Any, None), "calc", {"add": add, "boom": boom})


def dispatch(body: bytes) -> dict[str, Any]:
    return asyncio.run(server().dispatch(body))


def test_dispatch_ok() -> None:
    assert dispatch(b'{"method": "add", "args": {"a": 2, "b": 3}}') == {"ok": True, "result": 5}


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"args": {}}', b'{"method": 3}', b'{"method": "add", "args": []}'],
)
def test_dispatch_malformed(body: bytes) -> None:
    out = dispatch(body)
    assert out["ok"] is False and out["error"].startswith("BadRequest")


def test_dispatch_unknown_method_and_bad_args() -> None:
    assert dispatch(b'{"method": "mul", "args": {}}')["error"].startswith("UnknownMethod")
    assert dispatch(b'{"method": "add", "args": {"a": 1}}')["error"].startswith("BadArguments")


def test_dispatch_error_does_not_leak_exception_text() -> None:
    out = dispatch(b'{"method": "boom"}')
    assert out["ok"] is False
    assert "hunter22" not in out["error"]


class FakeExchange:
    def __init__(self, client: RpcClient, reply: bool) -> None:
        self.client = client
        self.reply = reply
        self.published: list[tuple[Any, str]] = []
        self.tasks: list[asyncio.Future[None]] = []

    async def publish(self, message: Any, routing_key: str) -> None:
        self.published.append((message, routing_key))
        if self.reply:
            request = json.loads(message.body)
            result = sum(request["args"].values())
            # answer an unknown correlation id first: it must be ignored
            for cid in ("someone-else", message.correlation_id):
                body = json.dumps({"ok": True, "result": result if cid != "someone-else" else -1}).encode()
                reply = SimpleNamespace(correlation_id=cid, body=body)
                self.tasks.append(asyncio.ensure_future(self._later(reply)))

    async def _later(self, reply: Any) -> None:
        await asyncio.sleep(0)
        await self.client._on_reply(reply)


class FakeChannel:
    def __init__(self, exchange: FakeExchange) -> None:
        self.default_exchange = exchange
        self.declared: list[tuple[str, bool]] = []

    async def declare_queue(self, name: str, durable: bool = False) -> Any:
        self.declared.append((name, durable))
        return SimpleNamespace(name=name)


def wired(reply: bool) -> tuple[RpcClient, FakeExchange, FakeChannel]:
    client = RpcClient(cast(Any, None), default_timeout=0.2)
    exchange = FakeExchange(client, reply)
    channel = FakeChannel(exchange)
    client._channel = cast(Any, channel)
    client._reply_queue = cast(Any, SimpleNamespace(name="rpc.reply.test"))
    return client, exchange, channel


def test_client_matches_replies_by_correlation_id() -> None:
    client, exchange, channel = wired(reply=True)
    assert asyncio.run(client.call("calc", "add", a=2, b=5)) == 7
    message, routing_key = exchange.published[0]
    assert routing_key == "rpc.calc"
    assert message.reply_to == "rpc.reply.test"
    assert message.correlation_id and message.expiration is not None
    assert json.loads(message.body) == {"method": "add", "args": {"a": 2, "b": 5}}
    assert channel.declared == [("rpc.calc", True)]  # durable request queue
    assert client._pending == {}


def test_client_times_out() -> None:
    client, _, _ = wired(reply=False)
    with pytest.raises(RpcTimeout):
        asyncio.run(client.call("calc", "add", timeout=0.05, a=1, b=1))
    assert client._pending == {}


def test_client_raises_remote_error() -> None:
    client, _, _ = wired(reply=False)

    async def run() -> None:
        task = asyncio.ensure_future(client.call("calc", "boom"))
        await asyncio.sleep(0.01)
        (cid,) = client._pending
        body = json.dumps({"ok": False, "error": "RuntimeError: calc.boom failed"}).encode()
        await client._on_reply(cast(Any, SimpleNamespace(correlation_id=cid, body=body)))
        await task

    with pytest.raises(RpcRemoteError):
        asyncio.run(run())


class ClosedExchange:
    """The exchange of a robust channel that stayed closed after the broker moved."""

    async def publish(self, message: Any, routing_key: str) -> None:
        raise aio_pika.exceptions.ChannelInvalidStateError("channel closed")


def test_client_reopens_a_dead_channel_once_and_then_succeeds() -> None:
    client, exchange, channel = wired(reply=True)
    channel.default_exchange = cast(Any, ClosedExchange())
    reopened: list[bool] = []

    async def reopen() -> None:
        reopened.append(True)
        client._channel = cast(Any, FakeChannel(exchange))

    client._reopen = reopen  # type: ignore[method-assign]
    assert asyncio.run(client.call("calc", "add", a=1, b=2)) == 3
    assert reopened == [True]


def test_client_reports_an_unreachable_broker_as_an_rpc_error_not_a_crash() -> None:
    client, _, channel = wired(reply=False)
    channel.default_exchange = cast(Any, ClosedExchange())

    async def reopen() -> None:  # the new channel is as dead as the old one
        pass

    client._reopen = reopen  # type: ignore[method-assign]
    with pytest.raises(RpcUnavailable):
        asyncio.run(client.call("calc", "add", a=1, b=2))
    assert client._pending == {}


class FakeConnection:
    """Records the reconnect callbacks and hands out channels with reply queues."""

    def __init__(self) -> None:
        self.reconnect_callbacks: set[Any] = set()
        self.channels: list[Any] = []

    async def channel(self) -> Any:
        async def declare_queue(name: str, **_: Any) -> Any:
            async def consume(callback: Any, no_ack: bool = False) -> str:
                return "tag"

            return SimpleNamespace(name=name, consume=consume)

        async def close() -> None:
            pass

        channel = SimpleNamespace(declare_queue=declare_queue, close=close, is_closed=False)
        self.channels.append(channel)
        return channel


def test_client_rebuilds_its_reply_queue_after_a_reconnect() -> None:
    connection = FakeConnection()
    client = RpcClient(cast(Any, connection))

    async def run() -> None:
        await client.start()
        first = client._reply_queue
        assert len(connection.reconnect_callbacks) == 1
        for callback in list(connection.reconnect_callbacks):
            await callback(connection)
        assert len(connection.channels) == 2
        assert client._reply_queue is not first
        assert len(connection.reconnect_callbacks) == 1, "a rebuild must not register the callback again"

    asyncio.run(run())
