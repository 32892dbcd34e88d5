"""RedisSink against the Redis server on 127.0.0.1:6379."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from handlers.sinks import SINKS
from handlers.sinks.base import SinkConfig
from handlers.sinks.client import AiohttpClient
from handlers.sinks.redis import RedisSink
from receiver.errors import ConfigError, DeliveryFailed
from receiver.events import UpdateState
from receiver.settings import load_settings
from tests.helpers.brokers import REDIS_URL, require_broker, unique
from tests.helpers.events import make_event
from tests.helpers.servers import free_port

MakeSink = Callable[..., RedisSink]


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    """The test's own client; every key named ``relay-test-*`` it made is deleted after."""
    require_broker("Redis")
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, decode_responses=True)
    created: list[str] = []
    client.created = created  # type: ignore[attr-defined]
    yield client
    if created:
        await client.delete(*created)
    await client.aclose()


@pytest.fixture
async def make_sink(redis: Any) -> AsyncIterator[MakeSink]:
    sinks: list[RedisSink] = []
    async with AiohttpClient() as http:

        def build(url: str = REDIS_URL, name: str = "bus", **options: Any) -> RedisSink:
            config = SinkConfig(
                name=name, type="redis", options={"url": url, **options}, timeout_s=3.0
            )
            sinks.append(RedisSink(config, http))
            return sinks[-1]

        yield build
        for sink in sinks:
            await sink.aclose()


def _stream(redis: Any, prefix: str = "relay-test") -> str:
    name: str = unique(prefix)
    redis.created.append(name)
    return name


async def _entries(redis: Any, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in await redis.xrange(stream)]


async def test_entry_carries_event_id_type_and_json(make_sink: MakeSink, redis: Any) -> None:
    """One XADD per event: fields ``event_id``, ``type`` and ``event`` (exactly the event
    JSON), on the stream the template names."""
    base = _stream(redis)
    redis.created.append(f"{base}.apiframe")
    event = make_event()
    assert await make_sink(stream=base + ".{provider}").deliver(event) is None  # no HTTP
    [entry] = await _entries(redis, f"{base}.apiframe")
    assert entry == {"event_id": event.id, "type": "upscale.completed", "event": event.to_json()}
    assert json.loads(entry["event"])["id"] == event.id
    assert SINKS["redis"] is RedisSink


async def test_default_stream_and_empty_ref(make_sink: MakeSink, redis: Any) -> None:
    """Without ``stream`` the entry goes to ``upscale-events``; ``{ref}`` and ``{job_id}``
    of a job-less event render empty."""
    event = make_event(UpdateState.FAILED, job_id=None)
    base = _stream(redis)
    sink = make_sink(stream=base + "-{job_id}-{ref}-x")
    redis.created.append(f"{base}---x")
    await sink.deliver(event)
    [entry] = await _entries(redis, f"{base}---x")
    assert entry["event_id"] == event.id
    assert make_sink()._stream == "upscale-events"


async def test_maxlen_trims_approximately(make_sink: MakeSink, redis: Any) -> None:
    """``maxlen`` caps the stream with ``MAXLEN ~``: old entries go, whole nodes at a time
    (an exact cap would leave exactly ``maxlen``)."""
    stream = _stream(redis)
    sink = make_sink(stream=stream, maxlen=5)
    for index in range(250):
        await sink.deliver(make_event(task_id=f"t{index}"))
    length = await redis.xlen(stream)
    assert 5 < length < 250
    last = await redis.xrevrange(stream, count=1)
    assert json.loads(last[0][1]["event"])["data"]["provider_task_id"] == "t249"


async def test_connection_is_reused_and_rebuilt_after_a_kill(
    make_sink: MakeSink, redis: Any
) -> None:
    """Deliveries share one connection; after the server kills it (``CLIENT KILL``) the
    next deliveries reconnect and nothing is lost."""
    stream = _stream(redis)
    name = unique("killme")
    sink = make_sink(stream=stream, name=name)
    events = [make_event(task_id=f"k{i}") for i in range(6)]
    for event in events[:3]:
        await sink.deliver(event)
    ours = [c for c in await redis.client_list() if c["name"] == f"upscale-relay.{name}"]
    assert len(ours) == 1
    killed = await redis.execute_command("CLIENT", "KILL", "ID", ours[0]["id"])
    assert killed == 1
    for event in events[3:]:
        await sink.deliver(event)
    entries = await _entries(redis, stream)
    assert [e["event_id"] for e in entries] == [e.id for e in events]
    after = [c for c in await redis.client_list() if c["name"] == f"upscale-relay.{name}"]
    assert len(after) == 1
    assert after[0]["id"] != ours[0]["id"]


async def test_wrong_credentials_are_permanent(make_sink: MakeSink) -> None:
    """A user Redis does not know: permanent, with the server's reason, no password."""
    sink = make_sink(url="redis://nobody:s3cret-pw@127.0.0.1:6379/0", stream="relay-test-auth")
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(make_event())
    assert caught.value.permanent is True
    assert "invalid username-password pair" in caught.value.message
    assert "s3cret-pw" not in caught.value.message


async def test_key_of_another_type_is_permanent(make_sink: MakeSink, redis: Any) -> None:
    """A stream key that holds a string: Redis' WRONGTYPE reply, permanent."""
    key = _stream(redis)
    await redis.set(key, "not a stream")
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(stream=key).deliver(make_event())
    assert caught.value.permanent is True
    assert "WRONGTYPE" in caught.value.message
    assert key in caught.value.message


async def test_unreachable_server_is_retryable(make_sink: MakeSink) -> None:
    """Nothing listening: retryable, and the URL stays out of the message."""
    sink = make_sink(url=f"redis://:pw@127.0.0.1:{free_port()}/0")
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(make_event())
    assert caught.value.permanent is False
    assert "pw" not in caught.value.message
    assert "127.0.0.1" not in caught.value.message


def test_check_config_names_problems_without_a_server() -> None:
    """``check-config`` reports a missing or odd URL, a bad ``maxlen`` and an unknown
    placeholder; a good table loads (no connection is made)."""
    env = {"RELAY_SECRET_KEY": "k", "RELAY_API_TOKEN": "t"}
    bad = (
        '[sinks.a]\ntype = "redis"\n'
        '[sinks.b]\ntype = "redis"\nurl = "http://x"\nmaxlen = 0\nstream = "s.{nope}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(env, config_text=bad)
    assert caught.value.problems == [
        "sinks.a: 'url' is required",
        "sinks.b: 'url' must start with redis:// or rediss:// or unix://",
        "sinks.b: 'stream' uses unknown placeholder(s) nope "
        "(known: {type}, {provider}, {job_id}, {ref})",
        "sinks.b: 'maxlen' must be a positive integer",
    ]
    good = '[sinks.c]\ntype = "redis"\nurl = "redis://127.0.0.1:1/0"\nstream = "e.{type}"\n'
    assert load_settings(env, config_text=good).sinks["c"].options["stream"] == "e.{type}"
