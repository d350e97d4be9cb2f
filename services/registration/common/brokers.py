"""Every broker of the stack at once: one robust connection per RabbitMQ task.

The stack runs ``broker_replicas`` independent brokers (not a RabbitMQ cluster: nothing is
replicated between them) on different workers, all behind the one name ``rabbitmq``; its endpoint
mode is dnsrr, so the name resolves to each task's own address. A worker consumes its queue on every
broker, and the API sends each call through one of them, another one when a call failed. A broker
lost with its node then costs only the calls it held, which ``call_with_retry`` repeats through
another broker, instead of every call waiting for it to start again elsewhere (48-60 s under
``make chaos``'s load, longer than a request's deadline).

:class:`Brokers` keeps the set of connections equal to what the name resolves to (a broker moved to
another node comes back under another address); :class:`PooledRpcClient` and :class:`PooledRpcServer`
are the caller's and the worker's sides over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from registration.common.deadline import Deadline, growing_delays, retry_until
from registration.common.rpc import (
    DEFAULT_TRANSIENT,
    Handler,
    RpcClient,
    RpcServer,
    RpcTimeout,
    RpcUnavailable,
    open_connection,
)
from registration.common.settings import RabbitSettings

log = logging.getLogger(__name__)

Resolve = Callable[[str, int], Awaitable[set[str]]]
Open = Callable[[str], Awaitable[AbstractRobustConnection]]
Added = Callable[[str, AbstractRobustConnection], Awaitable[None]]
Removed = Callable[[str], Awaitable[None]]

# How often the name is resolved again: a broker rescheduled on another worker is used this long
# after Swarm puts its new address in DNS (once it is healthy).
REFRESH_INTERVAL = 2.0
# A broker through which a call just failed is avoided this long while another one is there: a broker
# whose node died keeps an open-looking connection until its heartbeats are missed (about 15 s).
AVOID_AFTER_FAILURE = 20.0
CLOSE_TIMEOUT = 5.0


async def resolve_addresses(host: str, port: int) -> set[str]:
    """Every address ``host`` resolves to (Swarm's DNS: one per healthy task of a dnsrr service)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return {str(info[4][0]) for info in infos}


async def _nothing(*_: Any) -> None:
    return None


class Brokers:
    """One robust connection per address the broker's name resolves to, kept in step with DNS."""

    def __init__(
        self,
        settings: RabbitSettings,
        name: str,
        *,
        on_added: Added = _nothing,
        on_removed: Removed = _nothing,
        resolve: Resolve = resolve_addresses,
        open_one: Open | None = None,
        interval: float = REFRESH_INTERVAL,
    ) -> None:
        self._settings = settings
        self._on_added = on_added
        self._on_removed = on_removed
        self._resolve = resolve
        self._open: Open = open_one or (lambda address: open_connection(settings, name, host=address))
        self._interval = interval
        self.connections: dict[str, AbstractRobustConnection] = {}
        self._watch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Connect to the addresses that appeared, drop the ones that left DNS.

        Raises the last error when no broker is connected afterwards (nothing resolved, or every
        connection refused). A failed resolution drops nothing: a name briefly missing is no proof
        that a broker went away.
        """
        async with self._lock:
            settings = self._settings
            try:
                addresses = await self._resolve(settings.host, settings.port)
            except OSError:
                if not self.connections:
                    raise
                return
            for address in sorted(set(self.connections) - addresses):
                log.info("broker %s left %s; closing its connection", address, settings.host)
                await self._drop(address)
            error: BaseException | None = None
            for address in sorted(addresses - set(self.connections)):
                try:
                    connection = await self._open(address)
                except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                    log.warning("broker %s (%s) not reachable yet (%s)", address, settings.host, type(exc).__name__)
                    error = exc
                    continue
                self.connections[address] = connection
                try:
                    await self._on_added(address, connection)
                except Exception:
                    log.exception("could not start using broker %s; trying again later", address)
                    await self._drop(address)
                    continue
                log.info("connected to broker %s (%s:%s)", address, settings.host, settings.port)
            if not self.connections:
                raise error or ConnectionError(f"{settings.host} resolves to no address")

    async def _drop(self, address: str) -> None:
        connection = self.connections.pop(address)
        # Bounded: closing what was on a broker that vanished must not wait for it.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._on_removed(address), CLOSE_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)

    async def start(self, *, retry_delay: float = 1.0, max_delay: float = 1.0) -> None:
        """Wait until a broker is connected (``connect_timeout`` s, if > 0), then follow DNS."""
        settings = self._settings
        deadline = Deadline(settings.connect_timeout if settings.connect_timeout > 0 else math.inf)

        def retrying(error: BaseException, attempt: int, pause: float) -> None:
            # the exception text never contains the password (it is passed separately)
            log.warning(
                "RabbitMQ at %s:%s not reachable (%s); retrying in %.0fs",
                settings.host,
                settings.port,
                type(error).__name__,
                pause,
            )

        await retry_until(
            deadline,
            self.refresh,
            transient=(TimeoutError, OSError, aio_pika.exceptions.AMQPError),
            what="RabbitMQ connection",
            delay=growing_delays(retry_delay, factor=1.5, cap=max_delay),
            on_retry=retrying,
            reraise=True,
        )
        self._watch = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                log.warning("no broker connected (%s)", type(exc).__name__)
            except Exception:  # never let the follower die: the next round tries again
                log.exception("following the brokers' addresses failed")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        async with self._lock:
            for address in list(self.connections):
                await self._drop(address)


class PooledRpcClient:
    """The API's side: each call through one broker, the next call through the next one.

    A broker through which a call failed (lost, unreachable, or no answer) is left out for a while,
    so that ``call_with_retry``'s next attempt goes elsewhere.
    """

    def __init__(self, default_timeout: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._default_timeout = default_timeout
        self._clock = clock
        self._clients: dict[str, RpcClient] = {}
        self._failed_at: dict[str, float] = {}
        self._turn = itertools.count()

    async def add(self, address: str, connection: AbstractRobustConnection) -> None:
        client = RpcClient(connection, default_timeout=self._default_timeout)
        await client.start()
        self._clients[address] = client
        self._failed_at.pop(address, None)

    async def remove(self, address: str) -> None:
        self._failed_at.pop(address, None)
        client = self._clients.pop(address, None)
        if client is not None:
            # The calls waiting on it are repeated through another broker. Swarm takes a task out of DNS
            # before it stops it, so this comes first when a broker is moved: with a plain RpcError here
            # (not repeated) fab maintain-nodes' drains answered 502.
            await client.close(RpcUnavailable(f"broker {address} left", maybe_delivered=True))

    def choose(self) -> str | None:
        """The next broker in turn among the usable ones: connected, and not failed lately if any is not."""
        connected = [a for a, c in sorted(self._clients.items()) if c.connected]
        now = self._clock()
        trusted = [a for a in connected if now - self._failed_at.get(a, -math.inf) >= AVOID_AFTER_FAILURE]
        candidates = trusted or connected or sorted(self._clients)
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)]

    async def call(self, service: str, method: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        address = self.choose()
        if address is None:
            raise RpcUnavailable("no broker connected")
        try:
            return await self._clients[address].call(service, method, timeout=timeout, **kwargs)
        except (RpcUnavailable, RpcTimeout):
            self._failed_at[address] = self._clock()
            raise

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


class PooledRpcServer:
    """A worker's side: its queue consumed on every broker, each reply sent back through the broker the
    request came from."""

    def __init__(
        self,
        service: str,
        handlers: dict[str, Handler],
        *,
        prefetch: int = 10,
        transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT,
    ) -> None:
        self.service = service
        self._handlers = handlers
        self._prefetch = prefetch
        self._transient = transient
        self._servers: dict[str, RpcServer] = {}
        self._stopping = False

    async def add(self, address: str, connection: AbstractRobustConnection) -> None:
        if self._stopping:
            return  # a broker found while draining: nothing more is taken
        server = RpcServer(connection, self.service, self._handlers, prefetch=self._prefetch, transient=self._transient)
        await server.start()
        self._servers[address] = server

    async def remove(self, address: str) -> None:
        server = self._servers.pop(address, None)
        if server is not None:
            await server.stop(grace=0.0)

    async def ensure_consuming(self) -> bool:
        """True when consuming on at least one broker (each closed channel re-opened first)."""
        consuming = [await server.ensure_consuming() for server in list(self._servers.values())]
        return any(consuming)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking requests on every broker; the in-flight ones get ``grace`` seconds to finish."""
        self._stopping = True
        servers = list(self._servers.values())
        self._servers.clear()
        await asyncio.gather(*(server.stop(grace) for server in servers))
