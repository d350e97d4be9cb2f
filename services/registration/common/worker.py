"""Runs an RPC worker: connect (retrying), serve, heartbeat for the healthcheck, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping

from pydantic import Field

from registration.common.brokers import Brokers, PooledRpcServer
from registration.common.health import DEFAULT_HEARTBEAT_FILE, clear_heartbeat, touch_heartbeat
from registration.common.logsetup import setup_logging
from registration.common.metrics import instrument_handlers, start_metrics_server
from registration.common.rpc import DEFAULT_TRANSIENT, Handler
from registration.common.settings import EnvSettings, Float, Int, RabbitSettings

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


class WorkerSettings(EnvSettings):
    heartbeat_file: str = Field(DEFAULT_HEARTBEAT_FILE, validation_alias="HEARTBEAT_FILE")
    heartbeat_interval: Float = Field(5.0, validation_alias="HEARTBEAT_INTERVAL")
    prefetch: Int = Field(10, validation_alias="RPC_PREFETCH")


async def _heartbeat(server: PooledRpcServer, path: str, interval: float) -> None:
    # Healthy means "consuming our queue" (on at least one broker), not merely "connected": a channel
    # that closed while the connection stayed up is re-opened here (and the file goes stale until it is).
    while True:
        try:
            if await server.ensure_consuming():
                touch_heartbeat(path)
        except Exception:  # never let the heartbeat die; a stale file makes Swarm restart us
            log.exception("heartbeat check failed")
        await asyncio.sleep(interval)


async def serve_worker(
    service: str,
    handlers: Mapping[str, Handler],
    *,
    rabbit: RabbitSettings,
    on_startup: Hook | None = None,
    on_shutdown: Hook | None = None,
    transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT,
) -> None:
    settings = WorkerSettings.from_env()
    heartbeat_file = settings.heartbeat_file
    clear_heartbeat(heartbeat_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if on_startup is not None:
        await on_startup()
    start_metrics_server()
    server = PooledRpcServer(service, instrument_handlers(handlers), prefetch=settings.prefetch, transient=transient)
    # Our queue on every broker: whichever one the API sends a call through, we take it.
    brokers = Brokers(rabbit, service, on_added=server.add, on_removed=server.remove)
    await brokers.start()
    log.info("serving RPC on %d broker(s)", len(brokers.connections))
    beat = asyncio.create_task(_heartbeat(server, heartbeat_file, settings.heartbeat_interval))
    log.info("%s worker ready", service)
    await stop.wait()
    log.info("%s worker stopping", service)
    beat.cancel()
    clear_heartbeat(heartbeat_file)
    await server.stop()
    await brokers.close()
    if on_shutdown is not None:
        await on_shutdown()
    with contextlib.suppress(asyncio.CancelledError):
        await beat


def run_worker(
    service: str,
    handlers_factory: Callable[[], Awaitable[tuple[Mapping[str, Handler], Hook | None]]],
    *,
    transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT,
) -> None:
    """Entry point of ``python -m registration.<service>`` for RPC workers.

    ``handlers_factory`` runs inside the event loop (after logging is set up) and returns the
    handler table plus an optional shutdown hook. ``transient``: the exceptions that mean "a
    dependency is away for now"; the caller is told it may repeat the call.
    """
    setup_logging(service)

    async def main() -> None:
        rabbit = RabbitSettings.from_env()
        handlers, on_shutdown = await handlers_factory()
        await serve_worker(service, handlers, rabbit=rabbit, on_shutdown=on_shutdown, transient=transient)

    asyncio.run(main())
