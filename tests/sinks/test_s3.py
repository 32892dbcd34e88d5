"""S3Sink against moto's S3 API and an image host, both on 127.0.0.1."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from handlers.sinks.base import SinkConfig
from handlers.sinks.client import AiohttpClient
from handlers.sinks.s3 import S3Sink, image_extension, object_base, s3_failure
from receiver.errors import DeliveryFailed
from receiver.events import UpdateState
from tests.helpers.events import make_event
from tests.helpers.image_server import ImageServer, big_png, small_png
from tests.helpers.s3_server import CREDENTIALS, s3_client
from tests.helpers.servers import free_port

MakeSink = Callable[..., S3Sink]


@pytest.fixture
async def s3(s3_endpoint: str) -> AsyncIterator[Any]:
    async with s3_client(s3_endpoint) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"relay-{secrets.token_hex(6)}"
    await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def make_sink(s3_endpoint: str) -> AsyncIterator[MakeSink]:
    """Build S3Sinks on moto (closed after the test) sharing one client, as the relay does."""
    sinks: list[S3Sink] = []
    async with AiohttpClient() as http:

        def build(bucket: str, endpoint_url: str = s3_endpoint, **options: Any) -> S3Sink:
            config = SinkConfig(
                name="archive",
                type="s3",
                options={"bucket": bucket, "endpoint_url": endpoint_url, **CREDENTIALS, **options},
                timeout_s=5.0,
                allow_private_image_urls=True,  # the image host is on 127.0.0.1
            )
            sinks.append(S3Sink(config, http))
            return sinks[-1]

        yield build
        for sink in sinks:
            await sink.aclose()


async def _keys(s3: Any, bucket: str) -> list[str]:
    listing = await s3.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


async def _read(s3: Any, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    answer = await s3.get_object(Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        return await body.read(), answer


async def test_event_json_is_written_at_its_key(make_sink: MakeSink, s3: Any, bucket: str) -> None:
    """The object under ``{prefix}yyyy/mm/dd/job/event.json`` is exactly
    ``event.to_json()``, typed application/json."""
    event = make_event()
    answer = await make_sink(bucket, prefix="events/").deliver(event)
    assert answer.status == 200  # what S3 answered the PutObject
    assert answer.body.startswith(b"PutObject events/")
    key = f"events/2026/11/23/{event.job_id}/{event.id}.json"
    assert await _keys(s3, bucket) == [key]
    body, answer = await _read(s3, bucket, key)
    assert body == event.to_json().encode()
    assert answer["ContentType"] == "application/json"


async def test_key_takes_the_events_utc_date_and_no_job(
    make_sink: MakeSink, s3: Any, bucket: str
) -> None:
    """The date in the key is the event's own timestamp in UTC (not today), and an event
    without a job goes under ``no-job``."""
    moment = datetime(2024, 2, 29, 21, 30, tzinfo=timezone(timedelta(hours=-5)))
    event = make_event(UpdateState.FAILED, job_id=None, now=moment)
    await make_sink(bucket).deliver(event)
    assert await _keys(s3, bucket) == [f"2024/03/01/no-job/{event.id}.json"]
    assert object_base("p/", event) == f"p/2024/03/01/no-job/{event.id}"


async def test_redelivery_writes_the_same_keys(
    make_sink: MakeSink, s3: Any, bucket: str, image_host: tuple[ImageServer, str]
) -> None:
    """Delivering the same event twice (at-least-once) leaves the same objects."""
    _, host = image_host
    event = make_event(image_url=f"{host}/images/small.png")
    sink = make_sink(bucket, copy_images=True)
    await sink.deliver(event)
    first = await _keys(s3, bucket)
    await sink.deliver(event)
    assert await _keys(s3, bucket) == first
    base = object_base("", event)
    assert first == [base + ".json", base + ".png"]
    body, _ = await _read(s3, bucket, base + ".json")
    assert body == event.to_json().encode()


async def test_copies_a_small_image_byte_for_byte(
    make_sink: MakeSink, s3: Any, bucket: str, image_host: tuple[ImageServer, str]
) -> None:
    """With ``copy_images`` the completed event's PNG lands next to its JSON, same bytes
    and content type, and the JSON object names it in its metadata."""
    images, host = image_host
    event = make_event(image_url=f"{host}/images/small.png")
    await make_sink(bucket, copy_images=True, prefix="x/").deliver(event)
    base = object_base("x/", event)
    assert await _keys(s3, bucket) == [base + ".json", base + ".png"]
    image, answer = await _read(s3, bucket, base + ".png")
    assert image == small_png()
    assert answer["ContentType"] == "image/png"
    _, meta = await _read(s3, bucket, base + ".json")
    assert meta["Metadata"] == {"image-key": base + ".png"}
    assert images.hits == {"/images/small.png": 1}


async def test_copies_a_large_image_with_multipart(
    make_sink: MakeSink, s3: Any, bucket: str, image_host: tuple[ImageServer, str]
) -> None:
    """An image over 8 MiB goes up as a two-part multipart upload, bytes intact."""
    _, host = image_host
    event = make_event(image_url=f"{host}/images/big.png")
    assert len(big_png()) > 8 * 1024 * 1024
    await make_sink(bucket, copy_images=True).deliver(event)
    image, answer = await _read(s3, bucket, object_base("", event) + ".png")
    assert image == big_png()
    assert answer["ETag"].strip('"').endswith("-2")
    assert answer["ContentType"] == "image/png"
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")


async def test_broken_image_stream_aborts_the_upload(
    make_sink: MakeSink, s3: Any, bucket: str, image_host: tuple[ImageServer, str]
) -> None:
    """A source that dies after the first part fails retryably, aborts the multipart
    upload and writes no event JSON."""
    _, host = image_host
    event = make_event(image_url=f"{host}/images/broken.png")
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(bucket, copy_images=True).deliver(event)
    assert caught.value.permanent is False
    assert host not in caught.value.message
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")
    assert await _keys(s3, bucket) == []


@pytest.mark.parametrize(("status", "permanent"), [(404, True), (410, True), (503, False)])
async def test_image_source_errors(
    make_sink: MakeSink,
    s3: Any,
    bucket: str,
    image_host: tuple[ImageServer, str],
    status: int,
    permanent: bool,
) -> None:
    """An image that is gone fails permanently, a failing host retryably; either way
    nothing is written."""
    _, host = image_host
    event = make_event(image_url=f"{host}/status/{status}")
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(bucket, copy_images=True).deliver(event)
    assert (caught.value.status, caught.value.permanent) == (status, permanent)
    assert await _keys(s3, bucket) == []


async def test_non_http_image_url_is_permanent(make_sink: MakeSink, s3: Any, bucket: str) -> None:
    """An image URL that is not http(s) can never be fetched: permanent, nothing written."""
    event = make_event(image_url="ftp://files.example.test/x.png")
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(bucket, copy_images=True).deliver(event)
    assert caught.value.permanent is True
    assert await _keys(s3, bucket) == []


async def test_unreachable_image_host_is_retryable(
    make_sink: MakeSink, s3: Any, bucket: str
) -> None:
    """An image host that refuses connections fails retryably."""
    event = make_event(image_url=f"http://127.0.0.1:{free_port()}/images/x.png")
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(bucket, copy_images=True).deliver(event)
    assert (caught.value.status, caught.value.permanent) == (None, False)
    assert "127.0.0.1" not in caught.value.message


async def test_extension_comes_from_content_type_then_url(
    make_sink: MakeSink, s3: Any, bucket: str, image_host: tuple[ImageServer, str]
) -> None:
    """The copied image's extension comes from its content type, else from its URL."""
    _, host = image_host
    sink = make_sink(bucket, copy_images=True)
    typed = make_event(image_url=f"{host}/images/noext", task_id="t-typed")
    untyped = make_event(image_url=f"{host}/raw/picture.webp", task_id="t-untyped")
    await sink.deliver(typed)
    await sink.deliver(untyped)
    keys = await _keys(s3, bucket)
    assert object_base("", typed) + ".png" in keys
    assert object_base("", untyped) + ".webp" in keys
    _, answer = await _read(s3, bucket, object_base("", untyped) + ".webp")
    assert answer["ContentType"] == "application/octet-stream"
    assert image_extension("image/JPEG", "https://x/a") == ".jpg"
    assert image_extension("application/octet-stream", "https://x/a") == ".bin"


async def test_only_completed_events_copy_images(
    make_sink: MakeSink, s3: Any, bucket: str, image_host: tuple[ImageServer, str]
) -> None:
    """Failed and progress events, and sinks without ``copy_images``, fetch no image."""
    images, host = image_host
    url = f"{host}/images/small.png"
    await make_sink(bucket, copy_images=True).deliver(make_event(UpdateState.FAILED))
    await make_sink(bucket).deliver(make_event(image_url=url))
    assert images.hits == {}
    assert len(await _keys(s3, bucket)) == 2


async def test_missing_bucket_is_permanent(make_sink: MakeSink) -> None:
    """A bucket that does not exist fails permanently, naming the bucket."""
    name = f"missing-{secrets.token_hex(4)}"
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink(name).deliver(make_event())
    assert caught.value.permanent is True
    assert caught.value.status == 404
    assert f"bucket '{name}' does not exist" in caught.value.message


async def test_unreachable_s3_is_retryable(make_sink: MakeSink) -> None:
    """An S3 endpoint that refuses connections fails retryably, without its URL."""
    port = free_port()
    with pytest.raises(DeliveryFailed) as caught:
        await make_sink("b", endpoint_url=f"http://127.0.0.1:{port}").deliver(make_event())
    assert caught.value.permanent is False
    assert str(port) not in caught.value.message


async def test_aclose_releases_and_the_client_comes_back(
    make_sink: MakeSink, s3: Any, bucket: str
) -> None:
    """``aclose`` closes the S3 client (twice is harmless); a later delivery opens a new one."""
    sink = make_sink(bucket)
    await sink.deliver(make_event(task_id="a"))
    await sink.aclose()
    await sink.aclose()
    await sink.deliver(make_event(task_id="b"))
    assert len(await _keys(s3, bucket)) == 2


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} happened"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("exc", "permanent", "status"),
    [
        (_client_error("AccessDenied", 403), True, 403),
        (_client_error("InvalidAccessKeyId", 403), True, 403),
        (_client_error("SignatureDoesNotMatch", 403), True, 403),
        (_client_error("SlowDown", 503), False, 503),
        (_client_error("InternalError", 500), False, 500),
        (_client_error("RequestTimeout", 400), False, 400),
        (_client_error("InvalidArgument", 400), None, 400),
        (NoCredentialsError(), True, None),
        (ParamValidationError(report="Invalid bucket name"), True, None),
        (EndpointConnectionError(endpoint_url="http://10.9.8.7:9000"), False, None),
        (ReadTimeoutError(endpoint_url="http://10.9.8.7:9000"), False, None),
    ],
)
def test_s3_error_mapping(exc: Exception, permanent: bool | None, status: int | None) -> None:
    """Credentials and permissions are permanent, throttling/5xx/transport retryable,
    anything else left to the status policy; endpoints never appear in messages."""
    failure = s3_failure(exc, "archive")
    assert (failure.permanent, failure.status) == (permanent, status)
    assert "10.9.8.7" not in failure.message


def test_config_problems() -> None:
    """``bucket`` is required, ``copy_images`` a boolean, URLs http(s), keys paired."""
    assert S3Sink.config_problems({"bucket": "b", "copy_images": True, "prefix": "e/"}) == []
    assert S3Sink.config_problems({}) == ["'bucket' is required"]
    assert S3Sink.config_problems({"bucket": "b", "copy_images": "yes"}) == [
        "'copy_images' must be true or false"
    ]
    assert S3Sink.config_problems(
        {"bucket": "b", "endpoint_url": "minio:9000", "aws_access_key_id": "AK"}
    ) == [
        "'endpoint_url' must be an http:// or https:// URL",
        "'aws_access_key_id' and 'aws_secret_access_key' go together",
    ]
    assert S3Sink.config_problems({"bucket": "b", "prefix": 3}) == ["'prefix' must be a string"]
