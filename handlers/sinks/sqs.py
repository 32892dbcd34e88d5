"""``type = "sqs"``: send each event to an Amazon SQS queue (standard or FIFO).

Options: ``queue_url`` (required), ``region`` (required), ``endpoint_url`` (optional:
a local SQS API such as moto or ElasticMQ) and, as the S3 sink takes them,
``aws_access_key_id`` / ``aws_secret_access_key`` / ``aws_session_token``; without
them the standard AWS chain (environment, profile, instance role …) applies.

The message body is the event JSON, with a ``webhook-id`` message attribute = the event
id. On a FIFO queue (its URL ends in ``.fifo``) ``MessageDeduplicationId`` is the event
id, so SQS drops a redelivery within its 5-minute window, and ``MessageGroupId`` the
job id (events of one job stay in order; an event without a job is grouped by its
provider task). The event counts as delivered once ``SendMessage`` answered with a
``MessageId``. One aiobotocore client per sink, created on first use and reused (its
HTTP pool reconnects by itself); aiobotocore is imported lazily.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, ClassVar

from handlers.sinks.aws import (
    CREDENTIAL_KEYS,
    client_config,
    credential_pair_problems,
    credentials_of,
)
from handlers.sinks.base import SinkConfig, required_options
from handlers.sinks.client import HttpClient
from handlers.sinks.templates import scheme_problems
from receiver.errors import DeliveryFailed
from receiver.events import Event

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import SendMessageRequestTypeDef

_MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidParameterValue",
        "InvalidMessageContents",
        "MissingParameter",
        "UnsupportedOperation",
        "InvalidAddress",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "KmsAccessDenied",
        "KmsDisabled",
        "KmsNotFound",
    }
)


def message_group(event: Event) -> str:
    """The FIFO ``MessageGroupId``: the job, else the provider task (≤ 128 characters)."""
    group = event.data["job_id"] or f"{event.data['provider']}:{event.data['provider_task_id']}"
    return group[:128]


def sqs_failure(exc: Exception, queue_url: str) -> DeliveryFailed:
    """A botocore error as a DeliveryFailed with SQS's code and reason: a missing queue,
    refused credentials and invalid requests are permanent, the rest retryable."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    queue = queue_url.rsplit("/", 1)[-1]
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = str(error.get("Message", ""))[:200]
        if code in _MISSING_QUEUE:
            return DeliveryFailed(
                f"SQS queue {queue!r} does not exist ({code}: {detail})",
                status=status,
                permanent=True,
            )
        permanent = code in _PERMANENT_CODES
        return DeliveryFailed(
            f"SQS {code or 'error'} (HTTP {status}) on queue {queue!r}: {detail}",
            status=status,
            permanent=True if permanent else None if status and status < 500 else False,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return DeliveryFailed("SQS: no usable AWS credentials", permanent=True)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return DeliveryFailed("SQS timed out", permanent=False)
    return DeliveryFailed(f"SQS connection failed ({type(exc).__name__})", permanent=False)


class SqsSink:
    """``SendMessage`` each event; FIFO queues get deduplication and group ids."""

    type: ClassVar[str] = "sqs"
    options_keys: ClassVar[frozenset[str]] = frozenset(
        {"queue_url", "region", "endpoint_url", *CREDENTIAL_KEYS}
    )

    def __init__(self, config: SinkConfig, client: HttpClient) -> None:
        self.config = config
        options = config.options
        self._queue_url = str(options["queue_url"])
        self._fifo = self._queue_url.endswith(".fifo")
        self._region = str(options["region"])
        self._endpoint_url = str(options.get("endpoint_url") or "") or None
        self._credentials = credentials_of(options)
        self._stack: AsyncExitStack | None = None
        self._sqs: SQSClient | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = required_options(options, "queue_url", "region")
        problems += scheme_problems(options, "queue_url", ("https", "http"))
        problems += scheme_problems(options, "endpoint_url", ("https", "http"))
        for key in ("region", *CREDENTIAL_KEYS):
            if options.get(key) is not None and not isinstance(options[key], str):
                problems.append(f"'{key}' must be a string")
        problems += credential_pair_problems(options)
        return problems

    async def _client(self) -> SQSClient:
        async with self._lock:
            if self._sqs is None:
                from aiobotocore.session import get_session

                config = client_config(self.config.timeout_s)
                stack = AsyncExitStack()
                self._sqs = await stack.enter_async_context(
                    get_session().create_client(
                        "sqs",
                        region_name=self._region,
                        endpoint_url=self._endpoint_url,
                        config=config,
                        aws_access_key_id=self._credentials.get("aws_access_key_id"),
                        aws_secret_access_key=self._credentials.get("aws_secret_access_key"),
                        aws_session_token=self._credentials.get("aws_session_token"),
                    )
                )
                self._stack = stack
            return self._sqs

    async def deliver(self, event: Event) -> int | None:
        from botocore.exceptions import BotoCoreError, ClientError

        request: SendMessageRequestTypeDef = {
            "QueueUrl": self._queue_url,
            "MessageBody": event.to_json(),
            "MessageAttributes": {
                "webhook-id": {"DataType": "String", "StringValue": event.id},
                "type": {"DataType": "String", "StringValue": event.type.value},
            },
        }
        if self._fifo:
            request["MessageDeduplicationId"] = event.id
            request["MessageGroupId"] = message_group(event)
        try:
            sqs = await self._client()
            answer = await sqs.send_message(**request)
        except (BotoCoreError, ClientError) as exc:
            raise sqs_failure(exc, self._queue_url) from exc
        if not answer.get("MessageId"):
            raise DeliveryFailed("SQS answered SendMessage without a MessageId", permanent=False)
        return None

    async def aclose(self) -> None:
        async with self._lock:
            if self._stack is not None:
                await self._stack.aclose()
            self._stack = self._sqs = None
