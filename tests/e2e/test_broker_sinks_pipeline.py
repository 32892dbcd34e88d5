"""The broker and Discord sinks behind the whole relay: RabbitMQ, NATS JetStream and
Redis on 127.0.0.1, moto's SQS and a Discord-like webhook; brokers drop the relay's
connection mid-run and no event is lost."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from tests.helpers.brokers import (
    AMQP_URL,
    NATS_URL,
    REDIS_URL,
    rabbitmq_close_connections,
    require_broker,
    unique,
)
from tests.helpers.discord_standin import DiscordStandin
from tests.helpers.s3_server import CREDENTIALS, REGION
from tests.helpers.servers import serve_app
from tests.helpers.stack import Stack, running_stack

FAST_RETRIES = "retry_schedule_s = [0, 0.05, 0.1, 0.2, 0.2, 0.2]\n"


def _route(sink: str) -> str:
    return f'[[routes]]\nevents = ["upscale.completed"]\nsinks = ["{sink}"]\n'


async def _submit(stack: Stack, count: int, offset: int = 0) -> None:
    for index in range(offset, offset + count):
        await stack.submit(provider="apiframe", parent_id=f"g{index}", action="U1")


async def _delivered_ids(stack: Stack, sink: str, count: int, timeout: float = 15.0) -> set[str]:
    delivered = await stack.wait_deliveries(count, state="delivered", sink=sink, timeout=timeout)
    return {d["event_id"] for d in delivered}


async def test_amqp_pipeline_survives_a_dropped_connection(tmp_path: Path) -> None:
    """Events reach a RabbitMQ queue as event JSON with ``message_id``; RabbitMQ closes
    the relay's connection mid-run and every event still arrives."""
    require_broker("RabbitMQ")
    import aio_pika

    name = unique("relay-e2e")
    sink = name.replace("-", "_")
    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC)
    queue = await channel.declare_queue(name, exclusive=True)
    await queue.bind(exchange, "upscale.#")
    config = (
        f'[sinks.{sink}]\ntype = "amqp"\nurl = "{AMQP_URL}"\nexchange = "{name}"\n'
        f'routing_key = "upscale.{{provider}}"\n{FAST_RETRIES}' + _route(sink)
    )
    try:
        async with running_stack(tmp_path, extra_config=config) as stack:
            await _submit(stack, 3)
            await _delivered_ids(stack, sink, 3)
            assert rabbitmq_close_connections(f"upscale-relay {sink}") == 1
            await _submit(stack, 3, offset=3)
            ids = await _delivered_ids(stack, sink, 6)
            assert await stack.deliveries(state="dead") == []
        received: list[Any] = []
        async with asyncio.timeout(5):
            while len({m.message_id for m in received}) < 6:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
                    continue
                await message.ack()
                received.append(message)
        assert {m.message_id for m in received} == ids
        assert all(json.loads(m.body)["id"] == m.message_id for m in received)
        assert {m.routing_key for m in received} == {"upscale.apiframe"}
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        await connection.close()


async def test_redis_pipeline_survives_client_kill(tmp_path: Path) -> None:
    """Events land in the Redis stream (``event_id``/``type``/``event``); Redis kills
    the relay's connection mid-run and every event still lands."""
    require_broker("Redis")
    from redis.asyncio import Redis

    sink, stream = unique("relay_e2e").replace("-", "_"), unique("relay-e2e")
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    config = (
        f'[sinks.{sink}]\ntype = "redis"\nurl = "{REDIS_URL}"\nstream = "{stream}"\n'
        f"{FAST_RETRIES}" + _route(sink)
    )
    try:
        async with running_stack(tmp_path, extra_config=config) as stack:
            await _submit(stack, 3)
            await _delivered_ids(stack, sink, 3)
            ours = [c for c in await redis.client_list() if c["name"] == f"upscale-relay.{sink}"]
            assert ours
            for client in ours:
                await redis.execute_command("CLIENT", "KILL", "ID", client["id"])
            await _submit(stack, 3, offset=3)
            ids = await _delivered_ids(stack, sink, 6)
            assert await stack.deliveries(state="dead") == []
        entries = [fields for _, fields in await redis.xrange(stream)]
        assert {e["event_id"] for e in entries} == ids
        assert all(json.loads(e["event"])["id"] == e["event_id"] for e in entries)
    finally:
        await redis.delete(stream)
        await redis.aclose()


async def test_nats_pipeline_stores_each_event_once(tmp_path: Path) -> None:
    """Events reach the JetStream stream with ``Nats-Msg-Id`` = the event id."""
    require_broker("NATS")
    import nats

    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    name = unique("relay-e2e")
    prefix = name.replace("-", "_")
    await js.add_stream(name=name, subjects=[f"{prefix}.>"])
    sink = prefix
    config = (
        f'[sinks.{sink}]\ntype = "nats"\nurl = "{NATS_URL}"\nsubject = "{prefix}.{{type}}"\n'
        f"{FAST_RETRIES}" + _route(sink)
    )
    try:
        async with running_stack(tmp_path, extra_config=config) as stack:
            await _submit(stack, 3)
            ids = await _delivered_ids(stack, sink, 3)
        info = await js.stream_info(name)
        assert info.state.messages == 3
        stored = [await js.get_msg(name, seq) for seq in range(1, 4)]
        assert {m.headers["Nats-Msg-Id"] for m in stored} == ids
        assert {m.subject for m in stored} == {f"{prefix}.upscale.completed"}
    finally:
        await js.delete_stream(name)
        await client.close()


async def test_sqs_fifo_pipeline(tmp_path: Path, s3_endpoint: str) -> None:
    """Events reach a FIFO queue on moto's SQS, deduplicated by event id and grouped by
    job."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=s3_endpoint, **CREDENTIALS
    ) as sqs:
        created = await sqs.create_queue(
            QueueName=f"relay-e2e-{secrets.token_hex(4)}.fifo", Attributes={"FifoQueue": "true"}
        )
        queue = created["QueueUrl"]
        config = (
            f'[sinks.queue]\ntype = "sqs"\nqueue_url = "{queue}"\nregion = "{REGION}"\n'
            f'endpoint_url = "{s3_endpoint}"\n'
            + "".join(f'{k} = "{v}"\n' for k, v in CREDENTIALS.items())
            + _route("queue")
        )
        async with running_stack(tmp_path, extra_config=config) as stack:
            await _submit(stack, 2)
            ids = await _delivered_ids(stack, "queue", 2)
            jobs = {d["job_id"] for d in await stack.deliveries(sink="queue")}
        answer = await sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )
        messages = answer["Messages"]
        assert {m["Attributes"]["MessageDeduplicationId"] for m in messages} == ids
        assert {m["Attributes"]["MessageGroupId"] for m in messages} == jobs
        await sqs.delete_queue(QueueUrl=queue)


async def test_discord_pipeline_is_paced_without_429(tmp_path: Path) -> None:
    """Seven events to a Discord webhook allowing 5 a second all arrive as embeds; the
    relay paced itself so Discord never answered 429."""
    standin = DiscordStandin()
    hook = standin.add_hook(limit=5, window_s=1.0)
    async with serve_app(standin.app()) as base:
        config = f'[sinks.mj]\ntype = "discord"\nurl = "{base}{hook}"\n' + _route("mj")
        async with running_stack(tmp_path, extra_config=config) as stack:
            await _submit(stack, 7)
            ids = await _delivered_ids(stack, "mj", 7)
            assert await stack.deliveries(state="dead") == []
    webhook = standin.hooks[hook]
    assert webhook.rate_limited == 0
    assert {m["embeds"][0]["footer"]["text"] for m in webhook.messages} == ids
    assert webhook.pings == []
