"""Runs inside a service's container (tests/lab/test_hardening.py sends it there): tries AMQP operations
with that service's own broker user (RABBITMQ_USER and the password file RABBITMQ_PASSWORD_FILE names)
and prints, as JSON, "ok" or "refused" (403 ACCESS_REFUSED) for each, each on a channel of its own.

    python - OPERATION... < broker_probe.py

OPERATION: declare:QUEUE, consume:QUEUE, get:QUEUE, publish:EXCHANGE:ROUTING_KEY (EXCHANGE "" is the
default exchange), declare-exchange:NAME, reply-queue:NAME (exclusive, bound to rpc.replies). Nothing
here takes a message from a queue that holds any: a `consume` or `get` that is allowed is only tried on
queues the probe made itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection


async def ignore(message: AbstractIncomingMessage) -> None:
    return None


async def attempt(connection: AbstractRobustConnection, operation: str) -> str:
    kind, _, rest = operation.partition(":")
    channel: AbstractChannel = await connection.channel()
    try:
        if kind == "declare":
            await channel.declare_queue(rest, durable=True)
        elif kind == "consume":
            queue = await channel.get_queue(rest, ensure=False)
            tag = await queue.consume(ignore)
            await queue.cancel(tag)
        elif kind == "get":
            queue = await channel.get_queue(rest, ensure=False)
            await queue.get(no_ack=False, fail=False)
        elif kind == "publish":
            name, _, key = rest.partition(":")
            exchange = channel.default_exchange if name == "" else await channel.get_exchange(name, ensure=False)
            # Harmless if it were let through: not JSON (a worker answers BadRequest to no one), gone in 1 s.
            message = aio_pika.Message(body=b"probe", expiration=1)
            await exchange.publish(message, routing_key=key, mandatory=False)
        elif kind == "declare-exchange":
            await channel.declare_exchange(rest, aio_pika.ExchangeType.DIRECT, durable=True)
        elif kind == "reply-queue":
            queue = await channel.declare_queue(rest, exclusive=True, auto_delete=True)
            await queue.bind("rpc.replies", routing_key=rest)
        else:
            return f"unknown operation {operation}"
        # An asynchronous refusal (a publish) closes the channel: one more round trip makes it show here.
        await channel.declare_queue("probe-roundtrip-no-such-queue", passive=True)
    except aiormq.exceptions.ChannelAccessRefused:
        return "refused"
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return "ok"  # the round trip's queue does not exist: the operation itself went through
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"
    finally:
        if not channel.is_closed:
            await channel.close()
    return "ok"


async def main(operations: list[str]) -> dict[str, str]:
    password = Path(os.environ["RABBITMQ_PASSWORD_FILE"]).read_text().strip()
    connection = await aio_pika.connect_robust(
        host=os.environ.get("RABBITMQ_HOST", "rabbitmq"), login=os.environ["RABBITMQ_USER"], password=password
    )
    try:
        return {operation: await attempt(connection, operation) for operation in operations}
    finally:
        await connection.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:]))))
