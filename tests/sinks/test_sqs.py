"""SqsSink against moto's SQS API (server mode) on 127.0.0.1, standard and FIFO queues."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from handlers.sinks import SINKS
from handlers.sinks.base import SinkConfig
from handlers.sinks.client import AiohttpClient
from handlers.sinks.sqs import SqsSink, message_group
from receiver.errors import ConfigError, DeliveryFailed
from receiver.events import UpdateState
from receiver.settings import load_settings
from tests.helpers.events import make_event
from tests.helpers.s3_server import CREDENTIALS, REGION
from tests.helpers.servers import free_port

MakeSink = Callable[..., SqsSink]


@asynccontextmanager
async def sqs_client(endpoint_url: str) -> AsyncIterator[Any]:
    """An aiobotocore SQS client for the test's own queues and reads."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=endpoint_url, **CREDENTIALS
    ) as client:
        yield client


@pytest.fixture
async def sqs(s3_endpoint: str) -> AsyncIterator[Any]:
    async with sqs_client(s3_endpoint) as client:
        yield client


async def _queue(sqs: Any, fifo: bool = False) -> str:
    name = f"relay-{secrets.token_hex(5)}" + (".fifo" if fifo else "")
    attributes = {"FifoQueue": "true"} if fifo else {}
    created = await sqs.create_queue(QueueName=name, Attributes=attributes)
    url: str = created["QueueUrl"]
    return url


async def _receive(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    answer = await sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
        WaitTimeSeconds=0,
    )
    messages: list[dict[str, Any]] = answer.get("Messages", [])
    return messages


@pytest.fixture
async def make_sink(s3_endpoint: str) -> AsyncIterator[MakeSink]:
    sinks: list[SqsSink] = []
    async with AiohttpClient() as http:

        def build(queue_url: str, endpoint_url: str = s3_endpoint, **options: Any) -> SqsSink:
            config = SinkConfig(
                name="queue",
                type="sqs",
                options={
                    "queue_url": queue_url,
                    "region": REGION,
                    "endpoint_url": endpoint_url,
                    **CREDENTIALS,
                    **options,
                },
                timeout_s=5.0,
            )
            sinks.append(SqsSink(config, http))
            return sinks[-1]

        yield build
        for sink in sinks:
            await sink.aclose()


async def test_standard_queue_gets_the_event_and_its_id(make_sink: MakeSink, sqs: Any) -> None:
    """The body is the event JSON; the ``webhook-id`` attribute carries the event id."""
    queue = await _queue(sqs)
    event = make_event()
    assert await make_sink(queue).deliver(event) is None  # no HTTP status of its own
    [message] = await _receive(sqs, queue)
    assert message["Body"] == event.to_json()
    attributes = message["MessageAttributes"]
    assert attributes["webhook-id"] == {"DataType": "String", "StringValue": event.id}
    assert attributes["type"]["StringValue"] == "upscale.completed"
    assert SINKS["sqs"] is SqsSink
    await sqs.delete_queue(QueueUrl=queue)


async def test_fifo_queue_dedupes_by_event_id_and_groups_by_job(
    make_sink: MakeSink, sqs: Any
) -> None:
    """On a FIFO queue ``MessageDeduplicationId`` is the event id (a redelivery is
    dropped by SQS) and ``MessageGroupId`` the job id, else the provider task."""
    queue = await _queue(sqs, fifo=True)
    sink = make_sink(queue)
    event, jobless = make_event(), make_event(UpdateState.FAILED, job_id=None)
    await sink.deliver(event)
    await sink.deliver(event)
    await sink.deliver(jobless)
    messages = await _receive(sqs, queue)
    assert [json.loads(m["Body"])["id"] for m in messages] == [event.id, jobless.id]
    system = [m["Attributes"] for m in messages]
    assert system[0]["MessageDeduplicationId"] == event.id
    assert system[0]["MessageGroupId"] == event.job_id
    assert system[1]["MessageGroupId"] == "apiframe:task-1" == message_group(jobless)
    await sqs.delete_queue(QueueUrl=queue)


async def test_missing_queue_is_permanent(make_sink: MakeSink, s3_endpoint: str) -> None:
    """A queue that does not exist: permanent, with SQS' error code."""
    queue = f"{s3_endpoint}/123456789012/relay-missing-{secrets.token_hex(4)}"
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(queue).deliver(make_event())
    assert caught.value.permanent is True
    assert "does not exist" in caught.value.message
    assert "NonExistentQueue" in caught.value.message or "QueueDoesNotExist" in caught.value.message


async def test_client_is_reused_across_an_endpoint_restart(make_sink: MakeSink) -> None:
    """One client serves every delivery; while the SQS endpoint is down a delivery fails
    retryably, and once it is back the same client delivers again: nothing lost."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        async with sqs_client(endpoint) as sqs:
            queue = await _queue(sqs)
        sink = make_sink(queue, endpoint_url=endpoint)
        first, second = make_event(task_id="r1"), make_event(task_id="r2")
        await sink.deliver(first)
        client = sink._sqs
        server.stop()
        with pytest.raises(DeliveryFailed) as caught:
            await sink.deliver(second)
        assert caught.value.permanent is False
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        await sink.deliver(second)
        assert sink._sqs is client
        async with sqs_client(endpoint) as sqs:
            ids = [json.loads(m["Body"])["id"] for m in await _receive(sqs, queue)]
            await sqs.delete_queue(QueueUrl=queue)
        assert sorted(ids) == sorted([first.id, second.id])
    finally:
        server.stop()


def test_check_config_names_problems_without_aws() -> None:
    """``check-config`` reports missing ``queue_url`` and ``region``, a non-HTTP endpoint
    and half a key pair, without a network call."""
    env = {"RELAY_SECRET_KEY": "k", "RELAY_API_TOKEN": "t"}
    bad = (
        '[sinks.a]\ntype = "sqs"\n'
        '[sinks.b]\ntype = "sqs"\nqueue_url = "https://sqs.eu-west-1.amazonaws.com/1/q"\n'
        'region = "eu-west-1"\nendpoint_url = "ftp://x"\naws_access_key_id = "AKIA"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(env, config_text=bad)
    assert caught.value.problems == [
        "sinks.a: 'queue_url' is required",
        "sinks.a: 'region' is required",
        "sinks.b: 'endpoint_url' must start with https:// or http://",
        "sinks.b: 'aws_access_key_id' and 'aws_secret_access_key' go together",
    ]
    good = (
        '[sinks.c]\ntype = "sqs"\nqueue_url = "https://sqs.eu-west-1.amazonaws.com/1/q.fifo"\n'
        'region = "eu-west-1"\n'
    )
    assert load_settings(env, config_text=good).sinks["c"].type == "sqs"
