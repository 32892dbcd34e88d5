"""NatsSink against the NATS server with JetStream on 127.0.0.1:4222."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from handlers.sinks import SINKS
from handlers.sinks.base import SinkConfig
from handlers.sinks.client import AiohttpClient
from handlers.sinks.nats import NatsSink, nats_subject
from receiver.errors import ConfigError, DeliveryFailed
from receiver.events import UpdateState
from receiver.settings import load_settings
from tests.helpers.brokers import NATS_URL, require_broker, unique
from tests.helpers.events import make_event
from tests.helpers.servers import free_port

MakeSink = Callable[..., NatsSink]


@dataclass
class Stream:
    """A JetStream stream of the test's own over ``{prefix}.>``."""

    js: Any
    name: str
    prefix: str

    async def messages(self) -> list[Any]:
        info = await self.js.stream_info(self.name)
        return [
            await self.js.get_msg(self.name, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
            if info.state.messages
        ]


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    require_broker("NATS")
    import nats

    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    name = unique("relay-test")
    prefix = name.replace("-", "_")
    await js.add_stream(name=name, subjects=[f"{prefix}.>"])
    yield Stream(js, name, prefix)
    await js.delete_stream(name)
    await client.close()


@pytest.fixture
async def make_sink() -> AsyncIterator[MakeSink]:
    sinks: list[NatsSink] = []
    async with AiohttpClient() as http:

        def build(url: str = NATS_URL, **options: Any) -> NatsSink:
            config = SinkConfig(
                name="bus", type="nats", options={"url": url, **options}, timeout_s=3.0
            )
            sinks.append(NatsSink(config, http))
            return sinks[-1]

        yield build
        for sink in sinks:
            await sink.aclose()


async def test_message_is_the_event_with_nats_msg_id(make_sink: MakeSink, stream: Stream) -> None:
    """JetStream stores the event JSON on the rendered subject, with ``Nats-Msg-Id`` and
    ``webhook-id`` = the event id."""
    event = make_event()
    assert await make_sink(subject=stream.prefix + ".{type}").deliver(event) is None
    [message] = await stream.messages()
    assert message.subject == f"{stream.prefix}.upscale.completed"
    assert message.data == event.to_json().encode()
    assert message.headers["Nats-Msg-Id"] == event.id
    assert message.headers["webhook-id"] == event.id
    assert SINKS["nats"] is NatsSink


async def test_redelivery_is_deduplicated_by_jetstream(make_sink: MakeSink, stream: Stream) -> None:
    """The same event delivered twice is acked twice but stored once (``Nats-Msg-Id``)."""
    sink = make_sink(subject=stream.prefix + ".{provider}")
    event = make_event()
    await sink.deliver(event)
    await sink.deliver(event)
    failed = make_event(UpdateState.FAILED)
    await sink.deliver(failed)
    messages = await stream.messages()
    assert [json.loads(m.data)["id"] for m in messages] == [event.id, failed.id]


def test_subject_tokens_stay_valid() -> None:
    """Empty values drop their token, and wildcards or blanks in values become ``_``."""
    jobless = make_event(job_id=None)
    assert nats_subject("up.{ref}.{job_id}.{provider}", jobless) == "up.apiframe"
    odd = make_event(ref="a b*>c")
    assert nats_subject("up.{ref}", odd) == "up.a_b__c"
    assert nats_subject("{type}", odd) == "upscale.completed"


async def test_connection_survives_a_dropped_socket(make_sink: MakeSink, stream: Stream) -> None:
    """Deliveries reuse one client; when its TCP connection drops mid-run, nats-py
    reconnects, the next deliveries are acked and none is lost."""
    sink = make_sink(subject=stream.prefix + ".{type}")
    events = [make_event(task_id=f"n{i}") for i in range(6)]
    for event in events[:3]:
        await sink.deliver(event)
    client = sink._nats
    assert client is not None
    client._transport._io_writer.transport.abort()  # the connection drops under it
    for event in events[3:]:
        await sink.deliver(event)
    assert sink._nats is client
    assert client.stats["reconnects"] >= 1
    ids = [json.loads(m.data)["id"] for m in await stream.messages()]
    assert ids == [e.id for e in events]


async def test_subject_without_a_stream_is_permanent(make_sink: MakeSink) -> None:
    """No JetStream stream covers the subject: permanent, naming the subject."""
    require_broker("NATS")
    subject = unique("relay_test_nostream")
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(subject=subject).deliver(make_event())
    assert caught.value.permanent is True
    assert f"no JetStream stream covers subject {subject!r}" in caught.value.message


async def test_unreachable_server_is_retryable(make_sink: MakeSink) -> None:
    """Nothing listening: retryable after nats-py's short reconnect budget."""
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(url=f"nats://u:pw@127.0.0.1:{free_port()}").deliver(make_event())
    assert caught.value.permanent is False
    assert "pw" not in caught.value.message


@pytest.fixture
def nats_with_auth() -> Iterator[int]:
    """A throwaway nats-server that wants user ``relay`` / password ``right``."""
    binary = shutil.which("nats-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nats-server is not installed: the NATS auth test must run")
        pytest.skip("nats-server is not installed")
    port = free_port()
    server = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "--user", "relay", "--pass", "right"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("nats-server exited at start")
                time.sleep(0.02)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_refused_credentials_are_permanent(make_sink: MakeSink, nats_with_auth: int) -> None:
    """A server that refuses the login: permanent, NATS' authorization violation, no
    password in the text."""
    sink = make_sink(url=f"nats://relay:wr0ng@127.0.0.1:{nats_with_auth}")
    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(make_event())
    assert caught.value.permanent is True
    assert "refused the credentials" in caught.value.message
    assert "wr0ng" not in caught.value.message


def test_check_config_names_problems_without_a_server() -> None:
    """``check-config`` reports a missing or non-NATS URL and an unknown placeholder."""
    env = {"RELAY_SECRET_KEY": "k", "RELAY_API_TOKEN": "t"}
    bad = (
        '[sinks.a]\ntype = "nats"\nsubject = "x"\n'
        '[sinks.b]\ntype = "nats"\nurl = "amqp://x"\nsubject = "up.{status}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(env, config_text=bad)
    assert caught.value.problems == [
        "sinks.a: 'url' is required",
        "sinks.b: 'url' must start with nats:// or tls:// or ws:// or wss://",
        "sinks.b: 'subject' uses unknown placeholder(s) status "
        "(known: {type}, {provider}, {job_id}, {ref})",
    ]
    good = '[sinks.c]\ntype = "nats"\nurl = "nats://127.0.0.1:1"\nsubject = "up.{type}"\n'
    assert load_settings(env, config_text=good).sinks["c"].options["subject"] == "up.{type}"
