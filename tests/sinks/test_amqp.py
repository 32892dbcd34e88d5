"""AmqpSink against the RabbitMQ server on 127.0.0.1:5672 (guest/guest)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from handlers.sinks import SINKS
from handlers.sinks.amqp import AmqpSink
from handlers.sinks.base import SinkConfig
from handlers.sinks.client import AiohttpClient
from receiver.errors import ConfigError, DeliveryFailed
from receiver.events import UpdateState
from receiver.settings import load_settings
from tests.helpers.brokers import AMQP_URL, rabbitmq_close_connections, require_broker, unique
from tests.helpers.events import make_event
from tests.helpers.servers import free_port

MakeSink = Callable[..., AmqpSink]


@dataclass
class Bus:
    """A topic exchange of the test's own and a queue bound to all of it."""

    channel: Any
    exchange: str
    queue: Any

    async def messages(self, count: int, timeout: float = 5.0) -> list[Any]:
        """The next ``count`` messages on the queue (acked)."""
        found: list[Any] = []
        async with asyncio.timeout(timeout):
            while len(found) < count:
                message = await self.queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
                    continue
                await message.ack()
                found.append(message)
        return found


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    require_broker("RabbitMQ")
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    channel = await connection.channel()
    name = unique("relay-test")
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC)
    queue = await channel.declare_queue(name, exclusive=True)
    await queue.bind(exchange, "#")
    yield Bus(channel, name, queue)
    await queue.delete(if_unused=False, if_empty=False)
    await exchange.delete()
    await connection.close()


@pytest.fixture
async def make_sink() -> AsyncIterator[MakeSink]:
    sinks: list[AmqpSink] = []
    async with AiohttpClient() as http:

        def build(url: str = AMQP_URL, name: str = "bus", **options: Any) -> AmqpSink:
            config = SinkConfig(
                name=name, type="amqp", options={"url": url, **options}, timeout_s=5.0
            )
            sinks.append(AmqpSink(config, http))
            return sinks[-1]

        yield build
        for sink in sinks:
            await sink.aclose()


async def test_message_is_the_event_persistent_with_its_id(make_sink: MakeSink, bus: Bus) -> None:
    """The body is the event JSON; the message is persistent, typed JSON, and carries the
    event id as ``message_id`` and ``webhook-id``; the default routing key is the type."""
    event = make_event()
    assert await make_sink(exchange=bus.exchange).deliver(event) is None  # no HTTP status
    [message] = await bus.messages(1)
    assert message.body == event.to_json().encode()
    assert message.routing_key == "upscale.completed"
    assert (message.message_id, message.headers["webhook-id"]) == (event.id, event.id)
    assert message.delivery_mode == 2
    assert message.content_type == "application/json"
    assert message.type == "upscale.completed"
    assert SINKS["amqp"] is AmqpSink


async def test_routing_key_template(make_sink: MakeSink, bus: Bus) -> None:
    """``routing_key`` renders ``{type}``, ``{provider}``, ``{job_id}`` and ``{ref}``;
    a job-less event leaves the last two empty."""
    sink = make_sink(exchange=bus.exchange, routing_key="mj.{type}.{provider}.{ref}.{job_id}")
    with_job, without = make_event(), make_event(UpdateState.FAILED, job_id=None)
    await sink.deliver(with_job)
    await sink.deliver(without)
    keys = [m.routing_key for m in await bus.messages(2)]
    assert keys == [
        f"mj.upscale.completed.apiframe.order-42.{with_job.job_id}",
        "mj.upscale.failed.apiframe..",
    ]


async def test_default_exchange_routes_by_queue_name(make_sink: MakeSink, bus: Bus) -> None:
    """``exchange = ""`` (the default) publishes on RabbitMQ's default exchange, which
    delivers to the queue named by the routing key."""
    event = make_event()
    await make_sink(routing_key=bus.queue.name).deliver(event)
    [message] = await bus.messages(1)
    assert json.loads(message.body)["id"] == event.id


async def test_connection_is_reused_and_rebuilt_after_the_broker_drops_it(
    make_sink: MakeSink, bus: Bus
) -> None:
    """Concurrent deliveries share one connection and channel; after RabbitMQ closes
    that connection server-side, the next delivery opens a new one and no event is lost."""
    name = unique("relay-kill")
    sink = make_sink(name=name, exchange=bus.exchange)
    events = [make_event(task_id=f"a{i}") for i in range(12)]
    await asyncio.gather(*(sink.deliver(e) for e in events[:6]))
    first = sink._connection
    assert first is not None
    assert rabbitmq_close_connections(f"upscale-relay {name}") == 1
    await asyncio.sleep(0.3)  # let the client read the broker's Connection.Close
    for event in events[6:]:
        await sink.deliver(event)
    assert sink._connection is not first
    received = await bus.messages(12)
    assert sorted(m.message_id for m in received) == sorted(e.id for e in events)


async def test_missing_exchange_is_permanent_with_rabbitmqs_reason(
    make_sink: MakeSink, bus: Bus
) -> None:
    """An exchange that does not exist: permanent, with RabbitMQ's NOT_FOUND text; once
    it exists the same sink publishes (the closed channel is reopened)."""
    import aio_pika

    missing = unique("relay-test-missing")
    sink = make_sink(exchange=missing)
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(make_event())
    assert caught.value.permanent is True
    assert f"NOT_FOUND - no exchange '{missing}'" in caught.value.message
    exchange = await bus.channel.declare_exchange(missing, aio_pika.ExchangeType.FANOUT)
    try:
        await bus.queue.bind(exchange)
        await sink.deliver(make_event())
        assert len(await bus.messages(1)) == 1
    finally:
        await exchange.delete()


async def test_unroutable_message_is_a_retryable_failure(make_sink: MakeSink, bus: Bus) -> None:
    """A message no queue is bound for comes back (mandatory): retryable, NO_ROUTE."""
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(routing_key=unique("relay-test-no-queue")).deliver(make_event())
    assert caught.value.permanent is False
    assert "NO_ROUTE" in caught.value.message


async def test_wrong_password_is_permanent(make_sink: MakeSink) -> None:
    """RabbitMQ refusing the login: permanent, its ACCESS_REFUSED text, no password."""
    require_broker("RabbitMQ")
    sink = make_sink(url="amqp://guest:wr0ng-pw@127.0.0.1:5672/")
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(make_event())
    assert caught.value.permanent is True
    assert "ACCESS_REFUSED" in caught.value.message
    assert "wr0ng-pw" not in caught.value.message


async def test_unreachable_broker_is_retryable(make_sink: MakeSink) -> None:
    """Nothing listening: retryable, the URL stays out of the message."""
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(url=f"amqp://u:pw@127.0.0.1:{free_port()}/").deliver(make_event())
    assert caught.value.permanent is False
    assert "127.0.0.1" not in caught.value.message


def test_check_config_names_problems_without_a_broker() -> None:
    """``check-config`` reports a missing or non-AMQP URL, a non-string exchange and an
    unknown placeholder, without connecting."""
    env = {"RELAY_SECRET_KEY": "k", "RELAY_API_TOKEN": "t"}
    bad = (
        '[sinks.a]\ntype = "amqp"\nexchange = "x"\n'
        '[sinks.b]\ntype = "amqp"\nurl = "redis://x"\nexchange = 3\nrouting_key = "{job}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(env, config_text=bad)
    assert caught.value.problems == [
        "sinks.a: 'url' is required",
        "sinks.b: 'url' must start with amqp:// or amqps://",
        "sinks.b: 'exchange' must be a string",
        "sinks.b: 'routing_key' uses unknown placeholder(s) job "
        "(known: {type}, {provider}, {job_id}, {ref})",
    ]
    good = '[sinks.c]\ntype = "amqp"\nurl = "amqp://127.0.0.1:1/"\nexchange = "events"\n'
    assert load_settings(env, config_text=good).sinks["c"].options["exchange"] == "events"
