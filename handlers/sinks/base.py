"""The ``Sink`` contract: where normalised events go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from handlers.sinks.client import HttpClient
from receiver.events import Event


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """One ``[sinks.NAME]`` table. The keys every sink understands are fields; the
    sink-specific ones (``url``, ``bucket``, ``secret`` …) stay in ``options``."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    retry_schedule_s: tuple[float, ...] | None = None
    timeout_s: float = 10.0
    max_concurrency: int = field(default=8, metadata={"min": 1})
    circuit_failure_threshold: int = field(default=10, metadata={"min": 1})
    circuit_probe_interval_s: float = 30.0
    #: ``[relay] allow_private_image_urls``: fetch image URLs that resolve to loopback,
    #: private … addresses (off: such fetches are refused, see ``safe_fetch``)
    allow_private_image_urls: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryNote:
    """What a sink that *did* take an event wants on the attempt's record: the status
    the destination answered, and that part of the work was skipped on purpose
    (``reason``, a short label for metrics; ``message`` for the delivery's
    ``last_error`` and the log line)."""

    status: int | None
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class SinkAnswer:
    """What the destination answered a delivered event: its HTTP ``status`` (None
    where there is none: a file, a broker) and the start of its response ``body``
    (raw; the worker keeps a redacted KiB of it with the attempt)."""

    status: int | None = None
    body: bytes = b""


#: how much of a response body a sink hands back (the attempt keeps 1 KiB, redacted)
ANSWER_BYTES = 8192


def answer_of(value: SinkAnswer | DeliveryNote | int | None) -> SinkAnswer:
    """What ``Sink.deliver`` returned, as a ``SinkAnswer`` (a ``DeliveryNote``'s status)."""
    if isinstance(value, SinkAnswer):
        return value
    if isinstance(value, DeliveryNote):
        return SinkAnswer(value.status)
    return SinkAnswer(value)


class Sink(Protocol):
    """A destination for events.

    Built once per process with its config and the shared ``HttpClient``
    (``handlers.sinks.client``: aiohttp in production, a fake transport in unit tests)
    (construct with config, call with data)::

        sink = HttpSink(config, client)
        answer = await sink.deliver(event)

    ``deliver(event)`` returns when the destination has durably accepted the event,
    with what it answered: a ``SinkAnswer`` (HTTP status and the start of the body,
    which the delivery's attempt records), or just the status (None where there is
    none: a file, an SDK call) — or a ``DeliveryNote`` (status included) when it
    skipped part of the work on purpose. It raises ``DeliveryFailed`` otherwise: with the
    destination's HTTP ``status`` (and ``response_body``) when it answered,
    ``retry_after_s`` when it asked for a pause, and ``permanent=True`` for an answer
    that no retry can fix (the retry policy classifies the rest by status). It must be
    idempotent for the same ``event.id``: delivery is at-least-once.

    ``options_keys`` names the sink-specific keys of its ``[sinks.NAME]`` table (``url``,
    ``bucket`` …), besides the ``SinkConfig`` fields every sink understands; any other
    key is a config error ("unknown key `urll` (did you mean `url`?)"). Only these keys
    reach the sink, in ``config.options``.

    ``config_problems(options)`` lists what is wrong with a ``[sinks.NAME]`` table
    (missing ``url`` …), for ``relay check-config``; it must not touch the network.
    ``aclose()`` releases what the sink opened itself (not the shared client).
    """

    type: ClassVar[str]
    options_keys: ClassVar[frozenset[str]]
    config: SinkConfig

    def __init__(self, config: SinkConfig, client: HttpClient) -> None: ...

    async def deliver(self, event: Event) -> SinkAnswer | DeliveryNote | int | None: ...

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]: ...

    async def aclose(self) -> None: ...


def required_options(options: Mapping[str, Any], *keys: str) -> list[str]:
    """Problems for each of ``keys`` that is missing or blank."""
    return [f"'{key}' is required" for key in keys if not options.get(key)]
