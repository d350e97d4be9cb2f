"""Request/reply RPC over RabbitMQ with aio-pika (replacement for nameko's RPC).

Wire format (JSON, content type ``application/json``):

* request, published to the durable queue ``rpc.<service>`` on the default exchange, with
  ``reply_to`` (the caller's exclusive reply queue), ``correlation_id`` (uuid4 hex) and
  ``expiration`` (the call's timeout, so that stale requests are dropped by the broker):
  ``{"method": "create", "args": {"email": "a@b.c"}}``
* reply, published to ``reply_to`` with the same ``correlation_id``:
  ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "ExceptionType: message"}``

Workers ack a request only after handling it (a worker that dies mid-call lets another take
it); requests outlive worker restarts because the queues are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from registration.common.settings import RabbitSettings

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]


def queue_name(service: str) -> str:
    return f"rpc.{service}"


class RpcError(Exception):
    """Base class of RPC failures seen by a caller."""


class RpcTimeout(RpcError):
    """No reply within the call's timeout."""


class RpcRemoteError(RpcError):
    """The worker raised while handling the call."""


class RpcUnavailable(RpcError):
    """The broker cannot be reached (restarting, or moving to another node)."""


# What publishing raises while the broker is away: aio-pika's robust channel may stay closed after
# the broker moved to another node; a closed channel (ChannelInvalidStateError) and a connection
# not yet re-opened ("Connection was not opened") both raise RuntimeError subclasses.
_BROKER_GONE = (RuntimeError, aio_pika.exceptions.AMQPError, ConnectionError)


class RpcCaller(Protocol):
    """What the API gateway needs from an RPC client (so tests can substitute a fake)."""

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any: ...


async def connect(
    settings: RabbitSettings, name: str, *, retry_delay: float = 2.0, max_delay: float = 15.0
) -> AbstractRobustConnection:
    """Connect robustly, retrying until RabbitMQ is up (or ``connect_timeout`` s, if > 0).

    Once connected, aio-pika's robust connection re-establishes itself, its channels, queues
    and consumers after a broker restart.
    """
    deadline = time.monotonic() + settings.connect_timeout if settings.connect_timeout > 0 else None
    delay = retry_delay
    while True:
        try:
            conn = await aio_pika.connect_robust(
                host=settings.host,
                port=settings.port,
                login=settings.user,
                password=settings.password.get_secret_value(),
                virtualhost=settings.vhost,
                client_properties={"connection_name": f"{name}@{socket.gethostname()}"},
                timeout=10,
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            # the exception text never contains the password (we pass it separately)
            log.warning(
                "RabbitMQ at %s:%s not reachable (%s); retrying in %.0fs",
                settings.host,
                settings.port,
                type(exc).__name__,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, max_delay)
            continue
        log.info("connected to RabbitMQ at %s:%s", settings.host, settings.port)
        return conn


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class RpcClient:
    """Calls ``method`` on ``service`` and waits for the reply (correlation ids, timeouts)."""

    def __init__(self, connection: AbstractRobustConnection, default_timeout: float = 10.0) -> None:
        self._connection = connection
        self._default_timeout = default_timeout
        self._channel: AbstractChannel | None = None
        self._reply_queue: AbstractQueue | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._declared: set[str] = set()
        self._watching = False

    async def start(self) -> None:
        if not self._watching:
            # aio-pika's own restore of the exclusive reply queue fails when the broker comes back
            # empty on another node (seen in the lab: publishes worked, replies had nowhere to go).
            # Rebuild the channel and the reply queue ourselves after every reconnect.
            self._connection.reconnect_callbacks.add(self._on_reconnect)
            self._watching = True
        self._channel = await self._connection.channel()
        # A named, exclusive, auto-delete reply queue: the robust channel re-declares it under the
        # same name after a reconnect, so replies keep finding us.
        name = f"rpc.reply.{socket.gethostname()}.{uuid.uuid4().hex[:12]}"
        self._reply_queue = await self._channel.declare_queue(name, exclusive=True, auto_delete=True)
        await self._reply_queue.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RpcError("RPC client closed"))
        self._pending.clear()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        cid = message.correlation_id
        fut = self._pending.pop(cid, None) if cid else None
        if fut is None or fut.done():
            log.debug("dropping late or unknown reply %s", cid)
            return
        try:
            payload = json.loads(message.body)
        except ValueError:
            fut.set_exception(RpcRemoteError("malformed reply"))
            return
        if isinstance(payload, dict) and payload.get("ok") is True:
            fut.set_result(payload.get("result"))
        else:
            error = payload.get("error") if isinstance(payload, dict) else None
            fut.set_exception(RpcRemoteError(str(error or "remote error")))

    async def _ensure_queue(self, service: str) -> None:
        # Declaring the durable request queue from the caller side too means a request made
        # before the first worker ever started waits in the queue instead of being dropped.
        if service in self._declared:
            return
        assert self._channel is not None
        await self._channel.declare_queue(queue_name(service), durable=True)
        self._declared.add(service)

    async def _on_reconnect(self, *_: Any) -> None:
        try:
            await self._reopen()
        except _BROKER_GONE as exc:  # the next call reopens again
            log.warning("could not rebuild the RPC channel after a reconnect: %s", type(exc).__name__)
        else:
            log.info(
                "RPC client channel rebuilt after a reconnect (reply queue %s)",
                self._reply_queue and self._reply_queue.name,
            )

    async def _reopen(self) -> None:
        """A fresh channel and reply queue on the (reconnected) connection."""
        self._declared.clear()
        if self._channel is not None:
            with contextlib.suppress(Exception):  # it is broken already; we only drop it
                await self._channel.close()
        await self.start()

    async def _publish(self, service: str, message: aio_pika.Message) -> None:
        for attempt in (1, 2):
            try:
                await self._ensure_queue(service)
                assert self._channel is not None
                await self._channel.default_exchange.publish(message, routing_key=queue_name(service))
                return
            except _BROKER_GONE as exc:
                if attempt == 2:
                    raise RpcUnavailable(f"cannot publish to {service}: {type(exc).__name__}") from None
                log.warning("channel unusable (%s); opening a new one", type(exc).__name__)
                try:
                    await self._reopen()
                except _BROKER_GONE as reopen_error:
                    raise RpcUnavailable(f"broker unavailable: {type(reopen_error).__name__}") from None

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        if self._channel is None or self._reply_queue is None:
            raise RpcError("RPC client not started")
        timeout = self._default_timeout if timeout is None else timeout
        cid = uuid.uuid4().hex
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        try:
            # The publish itself is bounded too: while the broker is away, a robust channel waits.
            await asyncio.wait_for(
                self._publish(
                    service,
                    aio_pika.Message(
                        body=_encode({"method": method, "args": kwargs}),
                        content_type="application/json",
                        correlation_id=cid,
                        reply_to=self._reply_queue.name,
                        expiration=max(1, int(timeout + 0.999)),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                ),
                timeout,
            )
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise RpcTimeout(f"{service}.{method} did not answer within {timeout:.1f}s") from None
        finally:
            self._pending.pop(cid, None)


class RpcServer:
    """Consumes ``rpc.<service>`` and dispatches ``method`` to the registered handlers."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        service: str,
        handlers: Mapping[str, Handler],
        prefetch: int = 10,
    ) -> None:
        self._connection = connection
        self.service = service
        self._handlers = dict(handlers)
        self._prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._channel.declare_queue(queue_name(self.service), durable=True)
        self._consumer_tag = await self._queue.consume(self._on_request)
        log.info("serving RPC %s (%s)", queue_name(self.service), ", ".join(sorted(self._handlers)))

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking requests, let the in-flight ones finish, then close the channel."""
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
            self._consumer_tag = None
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            async with message.process(requeue=False):
                reply = await self.dispatch(message.body)
                if message.reply_to and self._channel is not None:
                    await self._channel.default_exchange.publish(
                        aio_pika.Message(
                            body=_encode(reply),
                            content_type="application/json",
                            correlation_id=message.correlation_id,
                        ),
                        routing_key=message.reply_to,
                    )
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def dispatch(self, body: bytes) -> dict[str, Any]:
        """Decode one request and run its handler; never raises."""
        try:
            request = json.loads(body)
            method = request["method"]
            args = request.get("args", {})
            if args is None:
                args = {}
            if not isinstance(method, str) or not isinstance(args, dict):
                raise TypeError("bad request shape")
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "BadRequest: malformed RPC request"}
        handler = self._handlers.get(method)
        if handler is None:
            return {"ok": False, "error": f"UnknownMethod: {self.service}.{method}"}
        try:
            result = await handler(**args)
        except TypeError as exc:
            log.warning("bad arguments for %s.%s: %s", self.service, method, exc)
            return {"ok": False, "error": f"BadArguments: {self.service}.{method}"}
        except Exception as exc:
            log.exception("%s.%s failed", self.service, method)
            return {"ok": False, "error": f"{type(exc).__name__}: {self.service}.{method} failed"}
        return {"ok": True, "result": result}
