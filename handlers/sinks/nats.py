"""``type = "nats"``: publish each event to NATS JetStream and wait for its ack.

Options: ``url`` (``nats://host:4222``, ``tls://`` or ``ws(s)://``; user and password
or a token in the URL as NATS takes them) and ``subject`` (a template, default
``{type}``, so ``upscale.completed``; see ``templates``). A JetStream stream must
cover the subject: the sink never creates one.

The message is the event JSON with a ``Nats-Msg-Id`` header = the event id, so
JetStream drops a redelivery inside the stream's duplicate window, and a
``webhook-id`` header with the same id for consumers. The event counts as delivered
once JetStream answered with a ``PubAck`` (stored, or recognised as a duplicate).

Values put into a subject never add wildcards or blanks (``*``, ``>`` and whitespace
become ``_``), and empty tokens are dropped, so ``upscale.{ref}`` of a job without a
ref is ``upscale``. One client per sink, connected on first use and reused; nats-py
reconnects it after the server restarts or drops the connection (a publish waiting
for its ack when the connection drops is sent again at once, buffered until the
reconnect); a client that gave up reconnecting is replaced on the next delivery.
nats-py is imported lazily.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from handlers.sinks.base import SinkConfig, required_options
from handlers.sinks.client import HttpClient
from handlers.sinks.templates import scheme_problems, template_problems, template_values
from receiver.errors import DeliveryFailed
from receiver.events import Event

if TYPE_CHECKING:
    from nats.aio.client import Client

DEFAULT_SUBJECT = "{type}"
# nats-py's reconnect budget, initial connect included: about a second, then the client
# closes and the next delivery (retried by the relay's schedule) builds a new one.
_RECONNECT_ATTEMPTS = 2
_RECONNECT_WAIT_S = 0.5
_NOT_IN_TOKEN = re.compile(r"[\s*>]")


def nats_subject(template: str, event: Event) -> str:
    """``template`` rendered into a valid publish subject (see the module docstring)."""
    values = {k: _NOT_IN_TOKEN.sub("_", v) for k, v in template_values(event).items()}
    tokens = template.format_map(values).split(".")
    return ".".join(token for token in tokens if token)


def _refused(exc: BaseException) -> bool:
    """Is ``exc`` the server refusing the login (nats-py words it several ways)?"""
    from nats import errors

    text = str(exc).lower()
    return isinstance(exc, errors.AuthorizationError | errors.InvalidUserCredentialsError) or (
        "authorization violation" in text or "authentication" in text
    )


def nats_failure(exc: BaseException, subject: str) -> DeliveryFailed:
    """A nats-py error as a DeliveryFailed carrying the server's reason."""
    from nats import errors
    from nats.js import errors as js_errors

    if isinstance(exc, js_errors.NoStreamResponseError):
        return DeliveryFailed(
            f"NATS: no JetStream stream covers subject {subject!r} (no responders)",
            permanent=True,
        )
    if isinstance(exc, js_errors.APIError):
        return DeliveryFailed(
            f"JetStream refused {subject!r}: {exc.description} "
            f"(code {exc.code}, error {exc.err_code})",
            permanent=exc.code == 400,
        )
    if _refused(exc):
        return DeliveryFailed(f"NATS refused the credentials ({exc})"[:300], permanent=True)
    if isinstance(exc, errors.MaxPayloadError):
        return DeliveryFailed(f"NATS: event over the server's max_payload ({exc})", permanent=True)
    if isinstance(exc, errors.BadSubjectError):
        return DeliveryFailed(f"NATS: invalid subject {subject!r}", permanent=True)
    if isinstance(exc, TimeoutError):
        return DeliveryFailed("NATS: no JetStream ack within the sink timeout", permanent=False)
    return DeliveryFailed(f"NATS connection failed ({type(exc).__name__})", permanent=False)


class NatsSink:
    """Publish to JetStream with a templated subject; ack = JetStream's ``PubAck``."""

    type: ClassVar[str] = "nats"
    options_keys: ClassVar[frozenset[str]] = frozenset({"url", "subject"})

    def __init__(self, config: SinkConfig, client: HttpClient) -> None:
        self.config = config
        options = config.options
        self._url = str(options["url"])
        self._subject = str(options.get("subject") or DEFAULT_SUBJECT)
        self._nats: Client | None = None
        self._refusal: Exception | None = None
        self._dropped: asyncio.Future[None] | None = None  # resolves when the link drops
        self._lock = asyncio.Lock()

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = required_options(options, "url")
        problems += scheme_problems(options, "url", ("nats", "tls", "ws", "wss"))
        problems += template_problems(options, "subject")
        return problems

    async def _client(self) -> Client:
        """The connected client (a new one when there is none or the last one gave up)."""
        async with self._lock:
            if self._nats is None or self._nats.is_closed:
                import nats
                from nats.errors import Error as NatsError

                self._refusal = None
                try:
                    self._nats = await nats.connect(
                        self._url,
                        name=f"upscale-relay {self.config.name}",
                        connect_timeout=max(1, round(self.config.timeout_s)),
                        allow_reconnect=True,
                        max_reconnect_attempts=_RECONNECT_ATTEMPTS,
                        reconnect_time_wait=_RECONNECT_WAIT_S,
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnect,
                    )
                except (NatsError, OSError, TimeoutError) as exc:
                    # the server's refusal, not the connection reset that followed it
                    raise (self._refusal or exc) from exc
            return self._nats

    async def _on_error(self, exc: Exception) -> None:
        """nats-py reports connection trouble here; keep a refusal for the failure."""
        if _refused(exc):
            self._refusal = exc

    async def _on_disconnect(self) -> None:
        """The connection dropped: wake the deliveries waiting for an ack on it."""
        dropped, self._dropped = self._dropped, None
        if dropped is not None and not dropped.done():
            dropped.set_result(None)

    def _drop_signal(self) -> asyncio.Future[None]:
        if self._dropped is None:
            self._dropped = asyncio.get_running_loop().create_future()
        return self._dropped

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        """Publish and wait for the ack; False when the connection dropped before it
        came (the message may have been lost on the wire: publish again)."""
        client = await self._client()
        dropped = self._drop_signal()
        publish = asyncio.ensure_future(
            client.jetstream().publish(
                subject, body, timeout=self.config.timeout_s, headers=headers
            )
        )
        waiters: set[asyncio.Future[Any]] = {publish, dropped}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if publish.done():
            publish.result()
            return True
        publish.cancel()
        await asyncio.gather(publish, return_exceptions=True)
        return False

    async def deliver(self, event: Event) -> int | None:
        from nats.errors import Error as NatsError

        subject = nats_subject(self._subject, event)
        if not subject:
            raise DeliveryFailed("NATS: the subject template renders empty", permanent=True)
        headers = {"Nats-Msg-Id": event.id, "webhook-id": event.id}
        body = event.to_json().encode()
        try:
            # a drop mid-publish costs one immediate retry (JetStream dedupes by
            # Nats-Msg-Id if the first one did arrive), not a whole sink timeout
            if not await self._publish(subject, body, headers) and not await self._publish(
                subject, body, headers
            ):
                raise DeliveryFailed("NATS connection dropped twice during publish")
        except (NatsError, OSError, TimeoutError) as exc:
            raise nats_failure(exc, subject) from exc
        return None

    async def aclose(self) -> None:
        async with self._lock:
            client, self._nats = self._nats, None
        if client is not None and not client.is_closed:
            await client.close()
