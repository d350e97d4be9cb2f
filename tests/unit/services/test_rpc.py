from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any, cast

import aio_pika
import pytest

from registration.common import rpc
from registration.common.deadline import Deadline, DeadlineExceeded, TransientError, current_deadline
from registration.common.rpc import (
    REPLY_EXCHANGE,
    RpcClient,
    RpcRemoteError,
    RpcServer,
    RpcTimeout,
    RpcUnavailable,
    call_with_retry,
)
from registration.common.settings import RabbitSettings


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
    assert json.loads(message.body) == {"method": "add", "args": {"a": 2, "b": 5}, "timeout": 0.2}
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

        client._reply_queue = cast(Any, SimpleNamespace(name="rpc.reply.new"))

    client._reopen = reopen  # type: ignore[method-assign]
    assert asyncio.run(client.call("calc", "add", a=1, b=2)) == 3
    assert reopened == [True]
    # the message that went out names the new reply queue, not the dead channel's
    message, _ = exchange.published[-1]
    assert message.reply_to == "rpc.reply.new"


class StuckConnectionExchange:
    """A publish whose confirmation aiormq fails with its reader's CancelledError: the connection was
    given up after missed heartbeats (the broker's node died without a word)."""

    async def publish(self, message: Any, routing_key: str) -> None:
        confirmation: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        confirmation.set_exception(asyncio.CancelledError())
        await confirmation


def test_a_publish_cut_by_a_stuck_connection_is_a_repeatable_rpc_error_not_a_crash() -> None:
    client, _, channel = wired(reply=False)
    channel.default_exchange = cast(Any, StuckConnectionExchange())
    with pytest.raises(RpcUnavailable) as caught:
        asyncio.run(client.call("calc", "add", a=1, b=2))
    assert caught.value.maybe_delivered is True
    assert client._pending == {}


def test_a_publish_that_hangs_is_given_up_soon_for_another_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish waiting on a channel the broker's move left behind is given up after PUBLISH_TIMEOUT,
    well before the attempt's own timeout, so the next try goes out on the rebuilt channel."""
    client, _, channel = wired(reply=False)

    class HangingExchange:
        async def publish(self, message: Any, routing_key: str) -> None:
            await asyncio.sleep(10)

    channel.default_exchange = cast(Any, HangingExchange())
    monkeypatch.setattr(rpc, "PUBLISH_TIMEOUT", 0.05)
    began = time.monotonic()
    with pytest.raises(RpcUnavailable) as caught:
        asyncio.run(client.call("calc", "add", timeout=5.0, a=1, b=2))
    assert time.monotonic() - began < 1.0
    assert caught.value.maybe_delivered is True, "it may have gone out: only a safe call is repeated"
    assert client._pending == {}


def test_a_call_cancelled_by_its_caller_while_publishing_stays_cancelled() -> None:
    client, _, channel = wired(reply=False)

    class SlowExchange:
        async def publish(self, message: Any, routing_key: str) -> None:
            await asyncio.sleep(10)

    channel.default_exchange = cast(Any, SlowExchange())

    async def run() -> None:
        task = asyncio.ensure_future(client.call("calc", "add", timeout=5.0, a=1, b=2))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run())


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
        self.close_callbacks: set[Any] = set()
        self.channels: list[Any] = []
        self.bindings: list[tuple[str, str, str]] = []  # (queue, exchange, routing key)

    async def channel(self) -> Any:
        connection = self

        async def declare_queue(name: str, **_: Any) -> Any:
            async def consume(callback: Any, no_ack: bool = False) -> str:
                return "tag"

            async def bind(exchange: str, routing_key: str) -> None:
                connection.bindings.append((name, exchange, routing_key))

            return SimpleNamespace(name=name, consume=consume, bind=bind)

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
        # each reply queue is bound to the replies exchange under its own name (workers reply there)
        assert client._reply_queue is not None
        assert connection.bindings[-1] == (client._reply_queue.name, REPLY_EXCHANGE, client._reply_queue.name)
        assert [b[0] for b in connection.bindings] == [first.name, client._reply_queue.name]  # type: ignore[union-attr]

    asyncio.run(run())


# --- the worker side: deadlines and transient errors --------------------------------------------


def test_dispatch_gives_the_handler_the_callers_deadline() -> None:
    seen: list[float] = []

    async def budget() -> float:
        remaining = current_deadline(default=999).remaining()
        seen.append(remaining)
        return remaining

    srv = RpcServer(cast(Any, None), "calc", {"budget": budget})
    out = asyncio.run(srv.dispatch(b'{"method": "budget", "args": {}, "timeout": 3.0}'))
    assert out["ok"] is True
    assert 2.0 < seen[0] <= 2.5  # the caller's 3 s, less a margin for the reply
    asyncio.run(srv.dispatch(b'{"method": "budget", "args": {}}'))
    assert seen[1] > 900  # no deadline in the message: the default budget


def test_dispatch_reports_an_unavailable_dependency_as_transient() -> None:
    async def db_away() -> None:
        raise DeadlineExceeded("database still away")

    async def bug() -> None:
        raise KeyError("x")

    srv = RpcServer(cast(Any, None), "db", {"away": db_away, "bug": bug})
    away = asyncio.run(srv.dispatch(b'{"method": "away"}'))
    assert away["ok"] is False and away["transient"] is True
    broken = asyncio.run(srv.dispatch(b'{"method": "bug"}'))
    assert broken["ok"] is False and broken["transient"] is False


def test_client_marks_transient_remote_errors() -> None:
    client, _, _ = wired(reply=False)

    async def run() -> None:
        task = asyncio.ensure_future(client.call("calc", "add", a=1, b=1))
        await asyncio.sleep(0.01)
        (cid,) = client._pending
        body = json.dumps({"ok": False, "error": "DeadlineExceeded: x", "transient": True}).encode()
        await client._on_reply(cast(Any, SimpleNamespace(correlation_id=cid, body=body)))
        await task

    with pytest.raises(RpcRemoteError) as caught:
        asyncio.run(run())
    assert caught.value.transient is True


@pytest.mark.parametrize("event", ["close", "reconnect"])
def test_a_lost_connection_fails_pending_calls_at_once_as_maybe_delivered(event: str) -> None:
    """The calls waiting on a connection fail (repeatable) when it closes (a broker whose node died,
    noticed by its missing heartbeats) and again when it comes back, rather than each at its own
    timeout (5 s here)."""
    connection = FakeConnection()
    client = RpcClient(cast(Any, connection), default_timeout=5.0)

    async def run() -> float:
        await client.start()
        client._channel = cast(Any, FakeChannel(FakeExchange(client, reply=False)))
        task = asyncio.ensure_future(client.call("calc", "add", a=1, b=1))
        await asyncio.sleep(0.01)
        began = time.monotonic()
        if event == "close":
            assert len(connection.close_callbacks) == 1
            for close in list(connection.close_callbacks):
                close(connection, ConnectionError("missed heartbeats"))
        else:
            for reconnect in list(connection.reconnect_callbacks):
                await reconnect(connection)
        with pytest.raises(RpcUnavailable) as caught:
            await task
        assert caught.value.maybe_delivered is True
        return time.monotonic() - began

    assert asyncio.run(asyncio.wait_for(run(), 2.0)) < 1.0
    assert client._pending == {}


def test_closing_a_client_fails_its_waiting_calls_with_the_reason_given() -> None:
    client, exchange, channel = wired(reply=False)
    channel.is_closed = True  # type: ignore[attr-defined]  # nothing to close

    async def run() -> None:
        waiting = asyncio.ensure_future(client.call("calc", "add", timeout=5.0, a=1, b=2))
        while not exchange.published:
            await asyncio.sleep(0.01)
        await client.close(RpcUnavailable("broker left", maybe_delivered=True))
        with pytest.raises(RpcUnavailable, match="broker left"):
            await waiting

    asyncio.run(asyncio.wait_for(run(), 2.0))
    assert client._pending == {}


def test_connections_ask_for_a_short_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiormq's default heartbeat (60 s) gives a dead broker up after 183 s; ours after 15 s."""
    seen: dict[str, Any] = {}

    async def connect_robust(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return SimpleNamespace()

    monkeypatch.setattr(aio_pika, "connect_robust", connect_robust)
    settings = RabbitSettings(RABBITMQ_PASSWORD="p")
    asyncio.run(rpc.open_connection(settings, "api"))
    assert seen["heartbeat"] == settings.heartbeat == 4
    assert seen["timeout"] == rpc.CONNECT_ATTEMPT_TIMEOUT
    assert seen["reconnect_interval"] == 1
    url = aio_pika.connection.make_url(None, **{k: v for k, v in seen.items() if k in ("host", "heartbeat")})
    assert url.query["heartbeat"] == "4", "aiormq reads the heartbeat from the URL aio-pika builds"


# --- call_with_retry: what is repeated, and for how long -----------------------------------------


class ScriptedCaller:
    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes = outcomes
        self.timeouts: list[float] = []

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        assert timeout is not None
        self.timeouts.append(timeout)
        outcome = self.outcomes.pop(0) if self.outcomes else RpcUnavailable("still away")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def retry(caller: ScriptedCaller, *, safe: bool, budget: float = 2.0) -> Any:
    return asyncio.run(
        call_with_retry(
            caller, "svc", "op", deadline=Deadline(budget), attempt_timeout=0.5, safe=safe, delay=lambda _: 0.01
        )
    )


def test_retry_repeats_what_never_reached_a_worker_even_when_not_safe() -> None:
    caller = ScriptedCaller([RpcUnavailable("publish failed"), RpcUnavailable("publish failed"), 42])
    assert retry(caller, safe=False) == 42


@pytest.mark.parametrize(
    "error",
    [RpcTimeout("no reply"), RpcUnavailable("lost", maybe_delivered=True), RpcRemoteError("db away", transient=True)],
)
def test_retry_repeats_what_may_have_reached_a_worker_only_when_safe(error: Exception) -> None:
    assert retry(ScriptedCaller([error, 7]), safe=True) == 7
    caller = ScriptedCaller([error, 7])
    with pytest.raises(type(error)):
        retry(caller, safe=False)
    assert len(caller.timeouts) == 1


def test_retry_never_repeats_a_worker_bug() -> None:
    caller = ScriptedCaller([RpcRemoteError("KeyError: svc.op failed"), 7])
    with pytest.raises(RpcRemoteError):
        retry(caller, safe=True)
    assert len(caller.timeouts) == 1


def test_retry_stops_at_the_deadline_with_the_last_error() -> None:
    caller = ScriptedCaller([])
    # A budget of three per-call timeouts: two attempts fit in it even on a loaded machine (0.3 s did
    # not always, under a lab's load), and the last attempt gets what is left, less than a whole timeout.
    with pytest.raises(RpcUnavailable):
        retry(caller, safe=True, budget=1.5)
    assert len(caller.timeouts) >= 2
    assert all(t <= 0.5 for t in caller.timeouts)  # each attempt within the per-call timeout
    assert caller.timeouts[-1] < 0.5  # and within what is left of the request's budget


def test_transient_error_is_the_base_of_deadline_exceeded() -> None:
    assert issubclass(DeadlineExceeded, TransientError)


# --- the server re-declares its queue and consumer after a reconnect ------------------------------


class ServerConnection:
    def __init__(self) -> None:
        self.reconnect_callbacks: set[Any] = set()
        self.close_callbacks: set[Any] = set()
        self.channels: list[Any] = []
        self.is_closed = False

    async def channel(self) -> Any:
        conn = self
        channel: Any = SimpleNamespace(is_closed=False, declared=[], consumers=[], qos=None, exchanges={})

        async def get_exchange(name: str, *, ensure: bool = True) -> Any:
            # a worker's broker user may not declare the replies exchange, not even passively
            assert ensure is False
            exchange = channel.exchanges.setdefault(name, SimpleNamespace(name=name, published=[]))

            async def publish(message: Any, routing_key: str) -> None:
                exchange.published.append((message, routing_key))

            exchange.publish = publish
            return exchange

        async def set_qos(prefetch_count: int) -> None:
            channel.qos = prefetch_count

        async def declare_queue(name: str, durable: bool = False) -> Any:
            channel.declared.append((name, durable))

            async def consume(callback: Any) -> str:
                channel.consumers.append(callback)
                return f"tag-{len(conn.channels)}"

            async def cancel(tag: str) -> None:
                channel.consumers.clear()

            return SimpleNamespace(name=name, consume=consume, cancel=cancel)

        async def close() -> None:
            channel.is_closed = True

        channel.set_qos, channel.declare_queue, channel.close = set_qos, declare_queue, close
        channel.get_exchange = get_exchange
        self.channels.append(channel)
        return channel


def test_server_declares_and_consumes_again_after_a_reconnect() -> None:
    connection = ServerConnection()
    srv = RpcServer(cast(Any, connection), "calc", {"add": add}, prefetch=3)

    async def run() -> None:
        await srv.start()
        assert srv.consuming
        first = connection.channels[0]
        assert first.declared == [("rpc.calc", True)] and first.qos == 3 and len(first.consumers) == 1
        for callback in list(connection.reconnect_callbacks):
            await callback(connection)
        second = connection.channels[1]
        assert second.declared == [("rpc.calc", True)] and second.qos == 3 and len(second.consumers) == 1
        assert first.is_closed and srv.consuming
        assert len(connection.reconnect_callbacks) == 1
        # a channel closed under us while the connection stays up is re-opened by the heartbeat
        second.is_closed = True
        assert not srv.consuming
        assert await srv.ensure_consuming()
        assert len(connection.channels) == 3
        await srv.stop(grace=0.1)
        assert not srv.consuming
        assert connection.reconnect_callbacks == set()

    asyncio.run(run())


class FakeRequest:
    """An incoming request as aio-pika hands it to the consumer callback."""

    def __init__(self, body: bytes, reply_to: str, correlation_id: str) -> None:
        self.body, self.reply_to, self.correlation_id = body, reply_to, correlation_id
        self.acked = False

    def process(self, requeue: bool = False) -> Any:
        request = self

        class Processing:
            async def __aenter__(self) -> None:
                return None

            async def __aexit__(self, *exc: object) -> None:
                request.acked = exc[0] is None

        return Processing()


def test_server_replies_through_the_replies_exchange_not_the_default_one() -> None:
    """A worker's broker user may write to rpc.replies only: the default exchange reaches every queue."""
    connection = ServerConnection()
    srv = RpcServer(cast(Any, connection), "calc", {"add": add})

    async def run() -> None:
        await srv.start()
        channel = connection.channels[0]
        assert not hasattr(channel, "default_exchange")
        request = FakeRequest(b'{"method": "add", "args": {"a": 1, "b": 2}}', "rpc.reply.host.abc", "cid-1")
        await srv._on_request(cast(Any, request))
        (message, routing_key), *_ = channel.exchanges[REPLY_EXCHANGE].published
        assert routing_key == "rpc.reply.host.abc" and message.correlation_id == "cid-1"
        assert json.loads(message.body) == {"ok": True, "result": 3}
        assert request.acked
        await srv.stop(grace=0.1)

    asyncio.run(run())
