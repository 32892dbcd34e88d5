"""The SSRF guard on image URLs: address classes, the check on every connection
(DNS answers the test controls), no redirects, and the S3 sink's refusal path."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import pytest
from structlog.testing import capture_logs

from handlers.sinks.base import SinkConfig
from handlers.sinks.s3 import S3Sink, object_base
from handlers.sinks.safe_fetch import (
    BlockedAddress,
    GuardedBackend,
    address_class,
    guarded_client,
)
from receiver.settings import load_settings
from tests.helpers.events import make_event
from tests.helpers.image_server import ImageServer, small_png
from tests.helpers.s3_server import CREDENTIALS, s3_client

PUBLIC = "93.184.216.34"  # a global address; the tests never really connect to it


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link_local"),
        ("fe80::1%eth0", "link_local"),
        ("::ffff:169.254.169.254", "link_local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 wrapping 10.0.0.1
        ("not-an-address", "reserved"),
        (PUBLIC, None),
        ("2606:4700:4700::1111", None),
        ("::ffff:93.184.216.34", None),
    ],
)
def test_address_classes(address: str, expected: str | None) -> None:
    assert address_class(address) == expected


class Answers:
    """A resolver the test controls: each lookup pops the next answer for the host."""

    def __init__(self, **answers: list[list[str]]) -> None:
        self.answers = {host.replace("_", "."): list(seq) for host, seq in answers.items()}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        sequence = self.answers[host]
        return sequence.pop(0) if len(sequence) > 1 else sequence[0]


class ToLocal(httpcore.AsyncNetworkBackend):
    """The backend that really connects: every address it is asked for is reached at
    the local test server instead (so "public" hosts work without the internet), and
    the addresses asked for are recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.asked: list[str] = []
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append(host)
        return await self.inner.connect_tcp("127.0.0.1", self.port, timeout)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_public_host_is_fetched_at_the_address_that_was_checked(
    image_host: tuple[ImageServer, str],
) -> None:
    _, url = image_host
    local = ToLocal(_port(url))
    resolver = Answers(images_example=[[PUBLIC]])
    async with guarded_client(resolver, inner=local) as client:
        response = await client.get("http://images.example/images/small.png")
    assert response.status_code == 200
    assert response.content == small_png()
    assert local.asked == [PUBLIC]  # connected by address, not by name
    assert resolver.lookups == ["images.example"]


async def test_dns_rebinding_is_caught_on_the_next_connection(
    image_host: tuple[ImageServer, str],
) -> None:
    """First answer public, second answer loopback: the check runs per connection."""
    _, url = image_host
    local = ToLocal(_port(url))
    backend = GuardedBackend(Answers(rebind_example=[[PUBLIC], ["127.0.0.1"]]), local)
    stream = await backend.connect_tcp("rebind.example", 80)
    await stream.aclose()
    with pytest.raises(BlockedAddress) as refused:
        await backend.connect_tcp("rebind.example", 80)
    assert refused.value.address_class == "loopback"
    assert local.asked == [PUBLIC]


async def test_one_private_answer_among_public_ones_refuses_the_host() -> None:
    backend = GuardedBackend(Answers(mixed_example=[[PUBLIC, "10.0.0.7"]]), ToLocal(9))
    with pytest.raises(BlockedAddress) as refused:
        await backend.connect_tcp("mixed.example", 443)
    assert refused.value.address_class == "private"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.png", "http://[::ffff:7f00:1]:9/x.png"])
async def test_address_literals_are_checked_without_dns(url: str) -> None:
    resolver = Answers()
    async with guarded_client(resolver, inner=ToLocal(9)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)
    assert resolver.lookups == []


async def test_redirects_are_not_followed(image_host: tuple[ImageServer, str]) -> None:
    images, url = image_host
    target = f"{url}/images/small.png"  # 127.0.0.1: what a redirect would smuggle in
    async with guarded_client(Answers(cdn_example=[[PUBLIC]]), inner=ToLocal(_port(url))) as c:
        response = await c.get(f"http://cdn.example/redirect?to={target}")
    assert response.status_code == 302
    assert images.hits.get("/images/small.png") is None


# -- the S3 sink -----------------------------------------------------------------


@pytest.fixture
async def s3(s3_endpoint: str) -> Any:
    async with s3_client(s3_endpoint) as client:
        yield client


def _sink(endpoint: str, bucket: str, resolver: Answers, client: httpx.AsyncClient) -> S3Sink:
    config = SinkConfig(
        name="archive",
        type="s3",
        options={"bucket": bucket, "endpoint_url": endpoint, "copy_images": True, **CREDENTIALS},
        timeout_s=5.0,
    )
    return S3Sink(config, client, resolver=resolver)


@pytest.mark.parametrize(
    ("answer", "address_class_"),
    [("127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("169.254.169.254", "link_local")],
)
async def test_s3_sink_archives_the_event_but_skips_a_refused_image(
    s3_endpoint: str,
    s3: Any,
    image_host: tuple[ImageServer, str],
    answer: str,
    address_class_: str,
) -> None:
    """The image host answers to 127.0.0.1, yet the event's URL names a host that the
    (controlled) DNS resolves to a forbidden address: no fetch, the JSON is archived
    with the reason, the note and the log line say why."""
    images, url = image_host
    bucket = f"relay-{secrets.token_hex(6)}"
    await s3.create_bucket(Bucket=bucket)
    event = make_event(image_url=f"http://images.attacker.example:{_port(url)}/images/small.png")
    async with httpx.AsyncClient() as shared:
        sink = _sink(s3_endpoint, bucket, Answers(images_attacker_example=[[answer]]), shared)
        try:
            with capture_logs() as logs:
                note = await sink.deliver(event)
        finally:
            await sink.aclose()
    assert note is not None
    assert note.reason == f"image_refused_{address_class_}"
    assert address_class_ in note.message
    assert images.hits == {}
    base = object_base("", event)
    listing = await s3.list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listing["Contents"]] == [base + ".json"]
    head = await s3.head_object(Bucket=bucket, Key=base + ".json")
    assert head["Metadata"] == {"image-skipped": address_class_}
    refused = [line for line in logs if line["event"] == "s3.image_refused"]
    assert len(refused) == 1
    assert refused[0]["address_class"] == address_class_
    assert refused[0]["log_level"] == "warning"


def test_allow_private_image_urls_reaches_every_sink() -> None:
    env = {"RELAY_SECRET_KEY": "k" * 16, "RELAY_API_TOKEN": "t" * 16}
    sinks = '[sinks.archive]\ntype = "s3"\nbucket = "b"\n'
    on = load_settings(env, config_text="[relay]\nallow_private_image_urls = true\n" + sinks)
    off = load_settings(env, config_text=sinks)
    assert on.allow_private_image_urls is True
    assert on.sinks["archive"].allow_private_image_urls is True
    assert off.allow_private_image_urls is False
    assert off.sinks["archive"].allow_private_image_urls is False


def test_allow_private_image_urls_must_be_a_boolean() -> None:
    env = {"RELAY_SECRET_KEY": "k" * 16, "RELAY_API_TOKEN": "t" * 16}
    with pytest.raises(Exception, match="allow_private_image_urls must be true or false"):
        load_settings(env, config_text='[relay]\nallow_private_image_urls = "yes"\n')
