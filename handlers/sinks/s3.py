"""``type = "s3"``: archive each event as a JSON object (and optionally its image).

Options: ``bucket`` (required), ``prefix`` (default ""), ``region`` (default
us-east-1), ``endpoint_url`` (MinIO, R2, a local S3 API; path-style addressing),
``copy_images`` (default false; image URLs come from providers, so the fetch goes
through the SSRF guard of ``safe_fetch`` unless ``[relay] allow_private_image_urls``
is true: a refused image is skipped, the event JSON still archived, and the reason
noted on the attempt), and optionally ``aws_access_key_id`` /
``aws_secret_access_key`` / ``aws_session_token``; without them the standard AWS
chain (environment, profile, instance role …) applies. aiobotocore is imported
lazily: the relay runs without it unless an S3 sink is configured.

Keys come from the event alone (its timestamp, job id and event id), so a retried
delivery overwrites the same objects::

    {prefix}{yyyy}/{mm}/{dd}/{job_id or "no-job"}/{event_id}.json
    {prefix}{yyyy}/{mm}/{dd}/{job_id or "no-job"}/{event_id}.png   (copy_images)
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from datetime import UTC
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import structlog

from handlers.retry_after import Answered, retry_after
from handlers.sinks.aws import (
    CREDENTIAL_KEYS,
    client_config,
    credential_pair_problems,
    credentials_of,
)
from handlers.sinks.base import DeliveryNote, SinkAnswer, SinkConfig, required_options
from handlers.sinks.client import HttpClient, TransportError
from receiver.errors import DeliveryFailed
from receiver.events import Event, EventType

if TYPE_CHECKING:
    import httpx
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

    from handlers.sinks.safe_fetch import BlockedAddress, Resolver

log = structlog.get_logger("relay.sinks.s3")
PART_SIZE = 8 * 1024 * 1024
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
}
_PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "SignatureDoesNotMatch",
    }
)
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ExpiredToken",
        "InternalError",
        "ServiceUnavailable",
    }
)


def object_base(prefix: str, event: Event) -> str:
    """The key of ``event``'s objects without the extension (date from the event)."""
    moment = event.timestamp.astimezone(UTC)
    return f"{prefix}{moment:%Y/%m/%d}/{event.job_id or 'no-job'}/{event.id}"


def image_extension(content_type: str, url: str) -> str:
    """``.png`` … from the content type, else from the URL's path, else ``.bin``."""
    known = _EXTENSIONS.get(content_type.lower())
    if known:
        return known
    suffix = posixpath.splitext(urlsplit(url).path)[1].lower()
    return suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ".bin"


def s3_failure(exc: Exception, bucket: str) -> DeliveryFailed:
    """A botocore error as a DeliveryFailed: configuration problems are permanent,
    throttling, 5xx and transport trouble are retryable."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return DeliveryFailed(
                f"bucket {bucket!r} does not exist", status=status, permanent=True
            )
        permanent: bool | None = None
        if code in _PERMANENT_CODES:
            permanent = True
        elif code in _RETRYABLE_CODES or (status is not None and (status >= 500 or status == 429)):
            permanent = False
        detail = str(error.get("Message", ""))[:200]
        return DeliveryFailed(
            f"S3 {code or 'error'} (HTTP {status}) on bucket {bucket!r}: {detail}",
            status=status,
            permanent=permanent,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return DeliveryFailed("S3: no usable AWS credentials", permanent=True)
    if isinstance(exc, ParamValidationError):
        return DeliveryFailed(f"S3 rejected the request: {exc}"[:300], permanent=True)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return DeliveryFailed("S3 timed out", permanent=False)
    return DeliveryFailed(f"S3 connection failed ({type(exc).__name__})", permanent=False)


def _refused_note(refused: BlockedAddress) -> DeliveryNote:
    return DeliveryNote(
        status=None,
        reason=f"image_refused_{refused.address_class}",
        message=(
            f"image not copied: its host resolves to a {refused.address_class} address"
            " (set [relay] allow_private_image_urls = true to allow)"
        ),
    )


def _transport_error(exc: httpx.HTTPError) -> str:
    """A short text for a failed image fetch (no URL: it may carry a token)."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return f"connection failed ({type(exc).__name__})"


def _content_type(headers: Mapping[str, str]) -> str:
    content_type = headers.get("content-type", "application/octet-stream")
    return content_type.split(";")[0].strip() or "application/octet-stream"


def _source_failed(status: int, response: Answered) -> DeliveryFailed:
    permanent: bool | None = None
    if status in (404, 410):
        permanent = True
    elif status >= 500 or status in (408, 429):
        permanent = False
    return DeliveryFailed(
        f"image source answered HTTP {status}",
        status=status,
        permanent=permanent,
        retry_after_s=retry_after(response),
    )


class S3Sink:
    """Write ``event.to_json()`` to the bucket; with ``copy_images`` first stream a
    completed event's image there (one PutObject up to 8 MiB, multipart above)."""

    type: ClassVar[str] = "s3"
    options_keys: ClassVar[frozenset[str]] = frozenset(
        {"bucket", "prefix", "region", "endpoint_url", "copy_images", *CREDENTIAL_KEYS}
    )

    def __init__(
        self, config: SinkConfig, client: HttpClient, *, resolver: Resolver | None = None
    ) -> None:
        self.config = config
        self._http = client
        self._guarded = not config.allow_private_image_urls
        # image URLs come from outside: unless allowed, they are fetched through a client
        # that checks every connection's resolved address (handlers/sinks/safe_fetch.py)
        self._guard: httpx.AsyncClient | None = None
        if self._guarded:
            # imported here: httpx/httpcore cost ~50 ms of a cold start that needs no S3
            from handlers.sinks.safe_fetch import guarded_client

            self._guard = (
                guarded_client(resolver, timeout_s=config.timeout_s)
                if resolver is not None
                else guarded_client(timeout_s=config.timeout_s)
            )
        options = config.options
        self._bucket = str(options["bucket"])
        self._prefix = str(options.get("prefix") or "")
        self._region = str(options.get("region") or "us-east-1")
        self._endpoint_url = str(options.get("endpoint_url") or "") or None
        self._copy_images = options.get("copy_images", False) is True
        self._credentials = credentials_of(options)
        self._stack: AsyncExitStack | None = None
        self._s3: S3Client | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = required_options(options, "bucket")
        if "copy_images" in options and not isinstance(options["copy_images"], bool):
            problems.append("'copy_images' must be true or false")
        for key in ("bucket", "prefix", "region", "endpoint_url", *CREDENTIAL_KEYS):
            if options.get(key) is not None and not isinstance(options[key], str):
                problems.append(f"'{key}' must be a string")
        endpoint = options.get("endpoint_url")
        if (
            isinstance(endpoint, str)
            and endpoint
            and not endpoint.startswith(("http://", "https://"))
        ):
            problems.append("'endpoint_url' must be an http:// or https:// URL")
        problems += credential_pair_problems(options)
        return problems

    async def _client(self) -> S3Client:
        async with self._lock:
            if self._s3 is None:
                from aiobotocore.session import get_session

                config = client_config(
                    self.config.timeout_s,
                    s3={"addressing_style": "path" if self._endpoint_url else "auto"},
                )
                stack = AsyncExitStack()
                self._s3 = s3 = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=config,
                        aws_access_key_id=self._credentials.get("aws_access_key_id"),
                        aws_secret_access_key=self._credentials.get("aws_secret_access_key"),
                        aws_session_token=self._credentials.get("aws_session_token"),
                    )
                )
                self._stack = stack
                return s3
            return self._s3

    @property
    def destination_host(self) -> str:
        """The S3 endpoint's host (the attempt record names it, never a URL)."""
        if self._endpoint_url:
            return urlsplit(self._endpoint_url).netloc.rsplit("@", 1)[-1]
        return f"{self._bucket}.s3.{self._region}.amazonaws.com"

    async def deliver(self, event: Event) -> SinkAnswer | DeliveryNote:
        from botocore.exceptions import BotoCoreError, ClientError

        base = object_base(self._prefix, event)
        image_url = event.data["image_url"]
        note: DeliveryNote | None = None
        try:
            s3 = await self._client()
            metadata: dict[str, str] = {}
            if self._copy_images and event.type is EventType.COMPLETED and image_url:
                from handlers.sinks.safe_fetch import BlockedAddress

                try:
                    image_key = await self._copy_image(s3, image_url, base)
                except BlockedAddress as refused:
                    note = _refused_note(refused)
                    metadata["image-skipped"] = refused.address_class
                    log.warning(
                        "s3.image_refused",
                        sink=self.config.name,
                        event_id=event.id,
                        host=refused.host[:253],
                        address_class=refused.address_class,
                    )
                else:
                    if image_key.isascii():
                        metadata["image-key"] = image_key
            put = await s3.put_object(
                Bucket=self._bucket,
                Key=base + ".json",
                Body=event.to_json().encode(),
                ContentType="application/json",
                Metadata=metadata,
            )
        except (BotoCoreError, ClientError) as exc:
            raise s3_failure(exc, self._bucket) from exc
        if note is not None:
            return note
        status = put.get("ResponseMetadata", {}).get("HTTPStatusCode")
        summary = f"PutObject {base}.json ETag {put.get('ETag', '?')}"
        return SinkAnswer(status, summary.encode())

    async def _copy_image(self, s3: S3Client, url: str, base: str) -> str:
        """Stream the image at ``url`` into the bucket; return its key. ``BlockedAddress``
        when the guard refuses the URL's host (a redirect is an error answer then)."""
        if not url.startswith(("https://", "http://")):
            raise DeliveryFailed("image_url is not an http(s) URL", permanent=True)
        if self._guard is not None:
            return await self._copy_guarded(self._guard, s3, url, base)
        try:
            async with self._http.get(url, self.config.timeout_s) as response:
                if response.status != 200:
                    raise _source_failed(response.status, response)
                key = base + image_extension(_content_type(response.headers), url)
                await self._upload(s3, key, _content_type(response.headers), response.chunks())
        except TransportError as exc:
            raise DeliveryFailed(f"image source {exc.message}", permanent=False) from exc
        return key

    async def _copy_guarded(
        self, guard: httpx.AsyncClient, s3: S3Client, url: str, base: str
    ) -> str:
        """``_copy_image`` through the SSRF-checking client: every connection's resolved
        address is checked, and no redirect is followed."""
        import httpx

        from handlers.sinks.safe_fetch import blocked_reason

        try:
            async with guard.stream(
                "GET", url, timeout=self.config.timeout_s, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise _source_failed(response.status_code, response)
                key = base + image_extension(_content_type(response.headers), url)
                await self._upload(s3, key, _content_type(response.headers), response.aiter_bytes())
        except httpx.HTTPError as exc:
            refused = blocked_reason(exc)
            if refused is not None:
                raise refused from None
            raise DeliveryFailed(f"image source {_transport_error(exc)}", permanent=False) from exc
        return key

    async def _upload(
        self, s3: S3Client, key: str, content_type: str, chunks: AsyncIterator[bytes]
    ) -> None:
        """One PutObject for up to PART_SIZE bytes, else a multipart upload of
        PART_SIZE parts (holding at most one part in memory), aborted on failure."""
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []
        try:
            async for chunk in chunks:
                buffer += chunk
                while len(buffer) > PART_SIZE:  # strictly: the last part is never empty
                    if upload_id is None:
                        created = await s3.create_multipart_upload(
                            Bucket=self._bucket, Key=key, ContentType=content_type
                        )
                        upload_id = created["UploadId"]
                    part = bytes(buffer[:PART_SIZE])
                    del buffer[:PART_SIZE]
                    parts.append(await self._part(s3, key, upload_id, parts, part))
            if upload_id is None:
                await s3.put_object(
                    Bucket=self._bucket, Key=key, Body=bytes(buffer), ContentType=content_type
                )
                return
            parts.append(await self._part(s3, key, upload_id, parts, bytes(buffer)))
            await s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    await s3.abort_multipart_upload(
                        Bucket=self._bucket, Key=key, UploadId=upload_id
                    )
            raise

    async def _part(
        self,
        s3: S3Client,
        key: str,
        upload_id: str,
        parts: list[CompletedPartTypeDef],
        body: bytes,
    ) -> CompletedPartTypeDef:
        number = len(parts) + 1
        answer = await s3.upload_part(
            Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def aclose(self) -> None:
        if self._guard is not None:
            await self._guard.aclose()
        async with self._lock:
            if self._stack is not None:
                await self._stack.aclose()
            self._stack = self._s3 = None
