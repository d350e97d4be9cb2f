"""Request/reply RPC over RabbitMQ with aio-pika (replacement for nameko's RPC).

Wire format (JSON, content type ``application/json``):

* request, published to the durable queue ``rpc.<service>`` on the default exchange, with
  ``reply_to`` (the caller's exclusive reply queue ``rpc.reply.<host>.<random>``, bound to the
  direct exchange ``rpc.replies`` under its own name), ``correlation_id`` (uuid4 hex) and
  ``expiration`` (the call's timeout, so that stale requests are dropped by the broker):
  ``{"method": "create", "args": {"email": "a@b.c"}, "timeout": 9.8}`` (``timeout``: seconds the
  caller still waits; the worker bounds its own retries by it)
* reply, published to the exchange ``rpc.replies`` with ``reply_to`` as routing key and the same
  ``correlation_id`` (not through the default exchange, which reaches every queue: a worker's broker
  user may write to ``rpc.replies`` only, so it cannot put requests into another service's queue):
  ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "ExceptionType: message",
  "transient": bool}`` (``transient``: a dependency was unavailable; the call may be repeated)

Workers ack a request only after handling it (a worker that dies mid-call lets another take
it); requests outlive worker restarts because the queues are durable. Both sides re-declare
what they need (request queues, the reply queue, consumers) after every reconnect, since a
broker that moved to another node comes back empty.

:func:`call_with_retry` is what the API uses: it repeats a call within the request's deadline,
with backoff, and repeats a call that may already have reached a worker only when the caller
says the operation is safe to repeat (every operation the API uses carries an idempotency key
or is naturally idempotent).
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
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from registration.common.deadline import (
    Deadline,
    TransientError,
    backoff_delays,
    reset_current_deadline,
    retry_until,
    set_current_deadline,
)
from registration.common.settings import RabbitSettings

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]

CONNECT_ATTEMPT_TIMEOUT = 5.0
# A publish and its confirmation take milliseconds when the broker is there.
PUBLISH_TIMEOUT = 3.0


# The broker's names, shared with the broker users' permissions (workloads/registration/config/
# rabbitmq-definitions.json.j2, checked against these by tests/unit/test_broker_permissions.py).
QUEUE_PREFIX = "rpc."
REPLY_QUEUE_PREFIX = "rpc.reply."
# Durable, direct; made by the broker's definitions at boot: no RPC user may configure (declare or
# delete) it, workers may only write to it, callers may only bind their reply queue to it.
REPLY_EXCHANGE = "rpc.replies"


def queue_name(service: str) -> str:
    return f"{QUEUE_PREFIX}{service}"


def reply_queue_name() -> str:
    """A new name for a caller's exclusive reply queue (one per channel)."""
    return f"{REPLY_QUEUE_PREFIX}{socket.gethostname()}.{uuid.uuid4().hex[:12]}"


class RpcError(Exception):
    """Base class of RPC failures seen by a caller."""


class RpcTimeout(RpcError):
    """No reply within the call's timeout (the request may or may not have been handled)."""


class RpcRemoteError(RpcError):
    """The worker raised while handling the call; ``transient`` when a dependency was unavailable."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RpcUnavailable(RpcError):
    """The broker cannot be reached (restarting, or moving to another node).

    ``maybe_delivered`` is False when the request certainly never reached a worker (it could not
    be published) and True when it was published but the connection went away before a reply.
    """

    def __init__(self, message: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


# What publishing raises while the broker is away: aio-pika's robust channel may stay closed after
# the broker moved to another node; a closed channel (ChannelInvalidStateError) and a connection
# not yet re-opened ("Connection was not opened") both raise RuntimeError subclasses.
_BROKER_GONE = (RuntimeError, aio_pika.exceptions.AMQPError, ConnectionError)


# What a worker's handler may raise when a dependency (database, Redis, SMTP) is unavailable:
# reported to the caller as transient, so that a safe call is repeated instead of failing.
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (TransientError, OSError, TimeoutError)


class RpcCaller(Protocol):
    """What the API gateway needs from an RPC client (so tests can substitute a fake)."""

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any: ...


async def open_connection(settings: RabbitSettings, name: str, *, host: str | None = None) -> AbstractRobustConnection:
    """One robust connection to the broker at ``host`` (``settings.host`` by default); one attempt.

    Once connected, aio-pika's robust connection re-establishes itself, its channels, queues and
    consumers after a broker restart, trying every second while it is away: a refused connection
    costs next to nothing. Retrying the first connection is :class:`registration.common.brokers.Brokers`' job.
    """
    return await aio_pika.connect_robust(
        host=host or settings.host,
        port=settings.port,
        login=settings.user,
        password=settings.password.get_secret_value(),
        virtualhost=settings.vhost,
        client_properties={"connection_name": f"{name}@{socket.gethostname()}"},
        # Each attempt, reconnects included: while the dead broker's address is still in DNS an
        # attempt waits for nothing, and the next one should follow soon.
        timeout=CONNECT_ATTEMPT_TIMEOUT,
        # After a broker restart, try again every second (aio-pika's default is 5 s).
        reconnect_interval=1,
        # A URL parameter aiormq reads: how soon a connection to a broker that vanished is given up.
        heartbeat=settings.heartbeat,
    )


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
            # A connection lost (a dead broker noticed by its missing heartbeats) fails the calls
            # waiting on it at once: call_with_retry repeats them once the broker is back, instead of
            # each waiting for its own timeout first.
            self._connection.close_callbacks.add(self._on_close)
            self._watching = True
        self._channel = await self._connection.channel()
        # A named, exclusive, auto-delete reply queue: the robust channel re-declares it under the
        # same name after a reconnect, so replies keep finding us. Workers reply through the
        # rpc.replies exchange, so the queue is bound there under its own name.
        name = reply_queue_name()
        self._reply_queue = await self._channel.declare_queue(name, exclusive=True, auto_delete=True)
        await self._reply_queue.bind(REPLY_EXCHANGE, routing_key=name)
        await self._reply_queue.consume(self._on_reply, no_ack=True)

    @property
    def connected(self) -> bool:
        """Whether calls can go out now (the connection up, as far as its heartbeats tell, and our channel open)."""
        return not self._connection.is_closed and self._channel is not None and not self._channel.is_closed

    async def close(self, reason: RpcError | None = None) -> None:
        """Close our channel; the calls still waiting fail with ``reason`` (by default a plain RpcError,
        which no caller repeats: the client is going away)."""
        self._fail_pending(reason or RpcError("RPC client closed"))
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    def _fail_pending(self, error: RpcError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()

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
            transient = isinstance(payload, dict) and payload.get("transient") is True
            fut.set_exception(RpcRemoteError(str(error or "remote error"), transient=transient))

    async def _ensure_queue(self, service: str) -> None:
        # Declaring the durable request queue from the caller side too means a request made
        # before the first worker ever started (or while the broker comes back empty after a
        # move) waits in the queue instead of being dropped. Forgotten on every reconnect.
        if service in self._declared:
            return
        assert self._channel is not None
        await self._channel.declare_queue(queue_name(service), durable=True)
        self._declared.add(service)

    def _on_close(self, *_: Any) -> None:
        if self._pending:
            log.warning("connection to the broker lost with %d calls waiting", len(self._pending))
        self._fail_pending(RpcUnavailable("connection to the broker was lost", maybe_delivered=True))

    async def _on_reconnect(self, *_: Any) -> None:
        # Replies to calls made before the connection dropped went to a reply queue the broker may
        # have lost: fail them now so that call_with_retry repeats them at once instead of waiting
        # for their timeout.
        self._fail_pending(RpcUnavailable("connection to the broker was lost", maybe_delivered=True))
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

    async def _publish(self, service: str, message: Callable[[str], aio_pika.Message]) -> None:
        """Publish ``message(reply_to)``; built per try, since a reopened channel has a new reply queue."""
        for attempt in (1, 2):
            try:
                if self._channel is None or self._reply_queue is None:
                    await self._reopen()
                await self._ensure_queue(service)
                assert self._channel is not None and self._reply_queue is not None
                await self._channel.default_exchange.publish(
                    message(self._reply_queue.name), routing_key=queue_name(service)
                )
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our own cancellation: the attempt's timeout, or the request cut
                # aiormq gives up a stuck connection (missed heartbeats: a broker whose node died) by
                # cancelling its reader, and fails the publish's confirmation with that CancelledError.
                # Seen under make chaos as the API's 500s; it is a lost broker like any other.
                raise RpcUnavailable(f"connection lost while publishing to {service}", maybe_delivered=True) from None
            except _BROKER_GONE as exc:
                if attempt == 2:
                    raise RpcUnavailable(f"cannot publish to {service}: {type(exc).__name__}") from None
                log.warning("channel unusable (%s); opening a new one", type(exc).__name__)
                try:
                    await self._reopen()
                except _BROKER_GONE as reopen_error:
                    raise RpcUnavailable(f"broker unavailable: {type(reopen_error).__name__}") from None

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        """One attempt: publish the request and wait up to ``timeout`` seconds for the reply."""
        timeout = self._default_timeout if timeout is None else timeout
        cid = uuid.uuid4().hex
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        started = time.monotonic()
        body = _encode({"method": method, "args": kwargs, "timeout": round(timeout, 3)})

        def message(reply_to: str) -> aio_pika.Message:
            return aio_pika.Message(
                body=body,
                content_type="application/json",
                correlation_id=cid,
                reply_to=reply_to,
                expiration=max(1, int(timeout + 0.999)),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )

        try:
            # The publish itself is bounded, and shorter than the attempt: while the broker is away a
            # robust channel waits, and a publish begun before a reconnect may wait on a channel given
            # up for a rebuilt one (make chaos: 10 s of a held request lost that way, the broker back).
            budget = min(timeout, PUBLISH_TIMEOUT)
            try:
                await asyncio.wait_for(self._publish(service, message), budget)
            except TimeoutError:
                # It may have gone out before its confirmation was lost: only a safe call is repeated.
                raise RpcUnavailable(
                    f"could not publish to {service} within {budget:.1f}s", maybe_delivered=True
                ) from None
            left = max(0.0, timeout - (time.monotonic() - started))
            return await asyncio.wait_for(fut, left)
        except TimeoutError:
            raise RpcTimeout(f"{service}.{method} did not answer within {timeout:.1f}s") from None
        finally:
            self._pending.pop(cid, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # failed by a lost connection while still publishing: seen, not "never retrieved"


def _may_repeat(error: RpcError, safe: bool) -> bool:
    """Whether a failed attempt may be repeated."""
    if isinstance(error, RpcUnavailable):
        return safe or not error.maybe_delivered
    if isinstance(error, RpcTimeout):
        return safe  # the worker may have handled it
    if isinstance(error, RpcRemoteError):
        return safe and error.transient
    return False


async def call_with_retry(
    rpc: RpcCaller,
    service: str,
    method: str,
    /,
    *,
    deadline: Deadline,
    attempt_timeout: float,
    safe: bool,
    delay: Callable[[int], float] | None = None,
    **kwargs: Any,
) -> Any:
    """Call ``service.method``, repeating failed attempts with backoff until ``deadline``.

    A request that may have reached a worker (a timeout, a lost connection, a worker whose
    database was away) is repeated only when ``safe``. When the budget is spent, or the error
    is not one to repeat, the last :class:`RpcError` is raised.
    """
    # Raised before a call when no time is left for it: not repeated, and no "giving up" logged.
    out_of_time = RpcTimeout(f"{service}.{method}: request deadline reached")

    async def call_once() -> Any:
        budget = min(attempt_timeout, deadline.remaining())
        if budget <= 0.0:
            raise out_of_time
        return await rpc.call(service, method, timeout=budget, **kwargs)

    def repeatable(error: BaseException) -> bool:
        return error is not out_of_time and isinstance(error, RpcError) and _may_repeat(error, safe)

    def retrying(error: BaseException, attempt: int, pause: float) -> None:
        log.warning(
            "%s.%s attempt %d failed (%s); retrying in %.2fs", service, method, attempt, type(error).__name__, pause
        )

    def giving_up(error: BaseException, attempts: int) -> None:
        log.warning("%s.%s: giving up after %d attempts (%s)", service, method, attempts, type(error).__name__)

    return await retry_until(
        deadline,
        call_once,
        transient=(RpcError,),
        what=f"{service}.{method}",
        delay=delay or backoff_delays(),
        repeatable=repeatable,
        reserve=0.05,
        on_retry=retrying,
        on_give_up=giving_up,
        reraise=True,
    )


class RpcServer:
    """Consumes ``rpc.<service>`` and dispatches ``method`` to the registered handlers."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        service: str,
        handlers: Mapping[str, Handler],
        prefetch: int = 10,
        transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT,
    ) -> None:
        self._connection = connection
        self.service = service
        self._handlers = dict(handlers)
        self._prefetch = prefetch
        self._transient = transient
        self._channel: AbstractChannel | None = None
        self._replies: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._watching = False
        self._stopping = False
        self._open_lock = asyncio.Lock()

    @property
    def consuming(self) -> bool:
        """True while our channel is open and our consumer is registered (for the heartbeat)."""
        return (
            not self._stopping
            and self._consumer_tag is not None
            and self._channel is not None
            and not self._channel.is_closed
            and not self._connection.is_closed
        )

    async def start(self) -> None:
        if not self._watching:
            # As for the client: after a reconnect, declare the queue and consume again on a fresh
            # channel rather than trusting aio-pika's restore (the broker may have come back empty).
            self._connection.reconnect_callbacks.add(self._on_reconnect)
            self._watching = True
        await self._open()
        log.info("serving RPC %s (%s)", queue_name(self.service), ", ".join(sorted(self._handlers)))

    async def _open(self) -> None:
        async with self._open_lock:
            if self._stopping:
                return
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.declare_queue(queue_name(self.service), durable=True)
            # Not declared (a worker may not configure it): the broker's definitions make it at boot.
            replies = await channel.get_exchange(REPLY_EXCHANGE, ensure=False)
            tag = await queue.consume(self._on_request)
            old = self._channel
            self._channel, self._replies, self._queue, self._consumer_tag = channel, replies, queue, tag
            if old is not None and old is not channel:
                # In-flight requests of the old channel finish; their ack fails and the broker
                # redelivers them, which the handlers' idempotency keys make harmless.
                with contextlib.suppress(Exception):
                    await old.close()

    async def _on_reconnect(self, *_: Any) -> None:
        try:
            await self._open()
        except _BROKER_GONE as exc:  # ensure_consuming (heartbeat loop) tries again
            log.warning("could not re-declare %s after a reconnect: %s", queue_name(self.service), type(exc).__name__)
        else:
            log.info("re-declared %s and consuming again after a reconnect", queue_name(self.service))

    async def ensure_consuming(self) -> bool:
        """Re-open the channel if it was closed while the connection is up; True when consuming."""
        if self._stopping or self._connection.is_closed:
            return False
        if self._channel is None or self._channel.is_closed:
            try:
                await self._open()
            except _BROKER_GONE as exc:
                log.warning("could not re-open %s: %s", queue_name(self.service), type(exc).__name__)
        return self.consuming

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking requests, let the in-flight ones finish, then close the channel."""
        self._stopping = True
        with contextlib.suppress(RuntimeError):  # a frozen collection: the connection is closing anyway
            self._connection.reconnect_callbacks.discard(self._on_reconnect)
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
                if message.reply_to and self._replies is not None:
                    await self._replies.publish(
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
            timeout = request.get("timeout")
            budget = float(timeout) if isinstance(timeout, int | float) and not isinstance(timeout, bool) else None
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "BadRequest: malformed RPC request"}
        handler = self._handlers.get(method)
        if handler is None:
            return {"ok": False, "error": f"UnknownMethod: {self.service}.{method}"}
        # The handler's own retries (database, Redis) stop a little before the caller gives up,
        # so that the reply still reaches it.
        token = set_current_deadline(None if budget is None else Deadline(max(0.1, budget - 0.5)))
        try:
            result = await handler(**args)
        except TypeError as exc:
            log.warning("bad arguments for %s.%s: %s", self.service, method, exc)
            return {"ok": False, "error": f"BadArguments: {self.service}.{method}"}
        except Exception as exc:
            transient = isinstance(exc, self._transient)
            if transient:
                log.warning("%s.%s: dependency unavailable (%s)", self.service, method, type(exc).__name__)
            else:
                log.exception("%s.%s failed", self.service, method)
            return {
                "ok": False,
                "error": f"{type(exc).__name__}: {self.service}.{method} failed",
                "transient": transient,
            }
        finally:
            reset_current_deadline(token)
        return {"ok": True, "result": result}
