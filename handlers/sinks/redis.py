"""``type = "redis"``: append each event to a Redis stream with ``XADD``.

Options: ``url`` (``redis://`` or ``rediss://``, with user, password and db as Redis
URLs take them), ``stream`` (a template, default ``upscale-events``; see
``templates``) and ``maxlen`` (default 100000: ``XADD … MAXLEN ~ maxlen``, so the
stream is trimmed cheaply to about that many entries).

An entry has the fields ``event_id``, ``type`` and ``event`` (the event JSON). The
event counts as delivered once ``XADD`` answered with the entry's id. Streams do not
deduplicate: a consumer skips an ``event_id`` it has already handled (at-least-once).
redis-py is imported lazily; its connection pool is reused across deliveries and
reconnects (once, at once, per command) after the server restarts or drops a connection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from handlers.sinks.base import SinkConfig, required_options
from handlers.sinks.client import HttpClient
from handlers.sinks.templates import render, scheme_problems, template_problems
from receiver.errors import DeliveryFailed
from receiver.events import Event

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.typing import EncodableT, FieldT

DEFAULT_STREAM = "upscale-events"
DEFAULT_MAXLEN = 100_000
# Server answers that pass by themselves (the rest of the error replies are permanent).
_TRANSIENT_REPLIES = ("OOM", "READONLY", "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")


def redis_failure(exc: Exception, stream: str) -> DeliveryFailed:
    """A redis-py error as a DeliveryFailed carrying the server's reason."""
    from redis.exceptions import (
        AuthenticationError,
        AuthorizationError,
        NoPermissionError,
        ResponseError,
    )

    if isinstance(exc, AuthenticationError | AuthorizationError | NoPermissionError):
        return DeliveryFailed(f"Redis refused the credentials: {exc}"[:300], permanent=True)
    if isinstance(exc, ResponseError):
        reason = str(exc)[:200]
        transient = reason.startswith(_TRANSIENT_REPLIES)
        return DeliveryFailed(
            f"Redis refused XADD to {stream!r}: {reason}", permanent=not transient
        )
    if isinstance(exc, TimeoutError):
        return DeliveryFailed("Redis timed out", permanent=False)
    return DeliveryFailed(f"Redis connection failed ({type(exc).__name__})", permanent=False)


def _client_name(sink_name: str) -> str:
    return "upscale-relay." + re.sub(r"[^A-Za-z0-9_.:-]", "_", sink_name)


class RedisSink:
    """``XADD`` each event to its stream over one lazily created client."""

    type: ClassVar[str] = "redis"
    options_keys: ClassVar[frozenset[str]] = frozenset({"url", "stream", "maxlen"})

    def __init__(self, config: SinkConfig, client: HttpClient) -> None:
        self.config = config
        options = config.options
        self._url = str(options["url"])
        self._stream = str(options.get("stream") or DEFAULT_STREAM)
        self._maxlen = int(options.get("maxlen") or DEFAULT_MAXLEN)
        self._redis: Redis | None = None

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = required_options(options, "url")
        problems += scheme_problems(options, "url", ("redis", "rediss", "unix"))
        problems += template_problems(options, "stream")
        maxlen = options.get("maxlen")
        if maxlen is not None and (
            isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1
        ):
            problems.append("'maxlen' must be a positive integer")
        return problems

    def client(self) -> Redis:
        """The sink's client (created on first use; its pool reconnects by itself)."""
        if self._redis is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._redis = Redis.from_url(
                self._url,
                # a connection the server dropped is replaced once, at once; longer
                # outages go back to the relay's own retry schedule
                retry=Retry(NoBackoff(), 1),
                socket_timeout=self.config.timeout_s,
                socket_connect_timeout=self.config.timeout_s,
                client_name=_client_name(self.config.name),
                max_connections=max(2, self.config.max_concurrency),
            )
        return self._redis

    async def deliver(self, event: Event) -> int | None:
        from redis.exceptions import RedisError

        stream = render(self._stream, event)
        fields: dict[FieldT, EncodableT] = {
            "event_id": event.id,
            "type": event.type.value,
            "event": event.to_json(),
        }
        try:
            await self.client().xadd(stream, fields, maxlen=self._maxlen, approximate=True)
        except (TimeoutError, RedisError, OSError) as exc:
            raise redis_failure(exc, stream) from exc
        return None

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
