"""An injected transport for unit tests of one sink: ``FakeHttp(handler)`` is an
``HttpClient`` that hands each request to ``handler`` instead of the network."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from handlers.sinks.client import Answer, Streamed, TransportError


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    timeout_s: float


Handler = Callable[[Sent], Answer]


def answer(status: int, body: bytes = b"", **headers: str) -> Answer:
    """An ``Answer`` with lower-case header names (``retry_after="7"`` → ``retry-after``)."""
    return Answer(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


@dataclass
class _Streamed:
    status: int
    headers: Mapping[str, str]
    body: bytes

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.body


@dataclass
class FakeHttp:
    """Records every request in ``sent``; ``handler`` answers or raises TransportError."""

    handler: Handler
    sent: list[Sent] = field(default_factory=list)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Answer:
        request = Sent("POST", url, dict(headers), body, timeout_s)
        self.sent.append(request)
        return self.handler(request)

    @asynccontextmanager
    async def get(self, url: str, timeout_s: float) -> AsyncIterator[Streamed]:
        request = Sent("GET", url, {}, b"", timeout_s)
        self.sent.append(request)
        got = self.handler(request)
        yield _Streamed(got.status, got.headers, got.body)


def refuse(request: Sent) -> Answer:
    """A handler for a destination that is down."""
    raise TransportError("connection failed (ClientConnectorError)")
