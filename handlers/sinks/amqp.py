"""``type = "amqp"``: publish each event to a RabbitMQ exchange with publisher confirms.

Options: ``url`` (``amqp://user:password@host:5672/vhost`` or ``amqps://``),
``exchange`` (must exist; ``""``, the default, is RabbitMQ's default exchange, which
routes by queue name) and ``routing_key`` (a template, default ``{type}``, so
``upscale.completed``; see ``templates``).

Each message is the event JSON (``content_type`` application/json, persistent:
delivery mode 2) with ``message_id`` and a ``webhook-id`` header = the event id, so
consumers dedupe, and ``type`` = the event type. It is published ``mandatory`` on a
confirm-mode channel: an event counts as delivered only when RabbitMQ acked it, and a
message no queue is bound for (RabbitMQ returns it) is a retryable failure rather
than a silent loss.

One connection and channel per sink, opened on first use and reused; a delivery that
finds them closed (the broker restarted, dropped the connection or closed the channel
over an error) opens new ones, and a publish that loses its connection midway is
retried once on a fresh one (the ``message_id`` lets consumers drop the rare copy).
This is aio-pika's plain ``connect`` with the sink rebuilding it, not
``connect_robust``: a robust connection restores itself in the background but never
replays a failed publish, and a channel closed over a missing exchange would keep it
cycling; the sink needs neither consumers nor declared state restored. aio-pika is
imported lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from handlers.sinks.base import SinkConfig, required_options
from handlers.sinks.client import HttpClient
from handlers.sinks.templates import render, scheme_problems, template_problems
from receiver.errors import DeliveryFailed
from receiver.events import Event

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

DEFAULT_ROUTING_KEY = "{type}"
_MAX_ROUTING_KEY_BYTES = 255


def amqp_failure(exc: BaseException, exchange: str, routing_key: str) -> DeliveryFailed:
    """An aio-pika / aiormq error as a DeliveryFailed carrying RabbitMQ's reason."""
    from aiormq import exceptions as amqp

    where = f"exchange {exchange!r}" if exchange else "the default exchange"
    if isinstance(exc, amqp.PublishError):
        reason = str(exc.args[0]) if exc.args else "returned"
        return DeliveryFailed(
            f"RabbitMQ returned the message ({reason}): no queue is bound to {where} "
            f"for routing key {routing_key!r}",
            permanent=False,
        )
    if isinstance(exc, amqp.DeliveryError):
        return DeliveryFailed(f"RabbitMQ did not confirm the message ({exc})", permanent=False)
    if isinstance(exc, amqp.ChannelNotFoundEntity | amqp.ChannelAccessRefused):
        reason = str(exc.args[0]) if exc.args else type(exc).__name__
        return DeliveryFailed(f"RabbitMQ refused to publish to {where}: {reason}", permanent=True)
    if isinstance(exc, amqp.ChannelClosed):
        reason = str(exc.args[0]) if exc.args else type(exc).__name__
        return DeliveryFailed(f"RabbitMQ closed the channel: {reason}", permanent=False)
    if isinstance(exc, amqp.ProbableAuthenticationError | amqp.AuthenticationError):
        reason = str(exc.args[0]) if exc.args else type(exc).__name__
        return DeliveryFailed(f"RabbitMQ refused the login: {reason}"[:300], permanent=True)
    if isinstance(exc, amqp.InvalidFrameError):
        return DeliveryFailed(
            "RabbitMQ closed the connection while opening it (unknown vhost, or the "
            "user may not use it)",
            permanent=True,
        )
    if isinstance(exc, TimeoutError):
        return DeliveryFailed("RabbitMQ timed out", permanent=False)
    return DeliveryFailed(f"RabbitMQ connection failed ({type(exc).__name__})", permanent=False)


def _lost_connection(exc: BaseException) -> bool:
    """Did the publish fail because the connection (not the broker's answer) went away?"""
    from aiormq import exceptions as amqp

    if isinstance(exc, amqp.ProbableAuthenticationError | amqp.AuthenticationError):
        return False
    return isinstance(
        exc,
        amqp.AMQPConnectionError | amqp.ChannelInvalidStateError | ConnectionError | RuntimeError,
    )


def _alive(connection: AbstractConnection) -> bool:
    """Is the connection usable? (aio-pika's ``is_closed`` stays False for a while after
    the broker closed the underlying aiormq connection.)"""
    transport = connection.transport
    return not connection.is_closed and transport is not None and not transport.connection.is_closed


class AmqpSink:
    """Publish to ``exchange`` with a templated routing key; ack = RabbitMQ's confirm."""

    type: ClassVar[str] = "amqp"
    options_keys: ClassVar[frozenset[str]] = frozenset({"url", "exchange", "routing_key"})

    def __init__(self, config: SinkConfig, client: HttpClient) -> None:
        self.config = config
        options = config.options
        self._url = str(options["url"])
        self._exchange_name = str(options.get("exchange") or "")
        self._routing_key = str(options.get("routing_key") or DEFAULT_ROUTING_KEY)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = required_options(options, "url")
        problems += scheme_problems(options, "url", ("amqp", "amqps"))
        exchange = options.get("exchange")
        if exchange is not None and not isinstance(exchange, str):
            problems.append("'exchange' must be a string")
        problems += template_problems(options, "routing_key")
        return problems

    async def _open(self) -> AbstractExchange:
        """The exchange on a live channel, (re)opening connection and channel as needed."""
        async with self._lock:
            connection, channel = self._connection, self._channel
            if connection is not None and not _alive(connection):
                with contextlib.suppress(Exception):  # already dead: release what is left
                    await connection.close()
                connection = self._connection = None
            if connection is None:
                import aio_pika

                self._channel = self._exchange = None
                connection = await aio_pika.connect(
                    self._url,
                    timeout=self.config.timeout_s,
                    client_properties={"connection_name": f"upscale-relay {self.config.name}"},
                )
                self._connection = connection
            if channel is None or channel.is_closed or self._exchange is None:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                self._channel = channel
                self._exchange = (
                    channel.default_exchange
                    if not self._exchange_name
                    else await channel.get_exchange(self._exchange_name, ensure=False)
                )
            return self._exchange

    async def _drop(self, failed: AbstractConnection | None = None) -> None:
        """Forget the connection (``failed``, if it is still the current one; any when
        None) so the next use opens a new one. A delivery failing on a connection that
        another one already replaced leaves the replacement alone."""
        async with self._lock:
            connection = self._connection
            if connection is None or (failed is not None and connection is not failed):
                return
            self._connection = self._channel = self._exchange = None
        with contextlib.suppress(Exception):  # already dead: nothing to release
            await connection.close()

    async def deliver(self, event: Event) -> int | None:
        from aio_pika import DeliveryMode, Message

        routing_key = render(self._routing_key, event)
        if len(routing_key.encode()) > _MAX_ROUTING_KEY_BYTES:
            raise DeliveryFailed("AMQP routing key longer than 255 bytes", permanent=True)
        message = Message(
            event.to_json().encode(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type.value,
            timestamp=event.timestamp,
            app_id="upscale-relay",
            headers={"webhook-id": event.id},
        )
        reconnected = False
        while True:
            used: AbstractConnection | None = None
            try:
                exchange = await self._open()
                used = self._connection
                await exchange.publish(message, routing_key, timeout=self.config.timeout_s)
                return None
            except Exception as exc:
                if not reconnected and _lost_connection(exc):
                    reconnected = True  # publish once more on a fresh connection
                    await self._drop(used)
                    continue
                raise amqp_failure(exc, self._exchange_name, routing_key) from exc

    async def aclose(self) -> None:
        await self._drop()
