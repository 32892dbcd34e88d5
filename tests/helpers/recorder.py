"""A downstream HTTP endpoint that records what it receives and answers from a script."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """Answers each POST with the next status from ``script`` (then ``default``)."""

    script: list[int] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    delay_s: float = 0.0
    reply: str | None = None  # the body of every answer (default "ok" / "nope")

    def answer(self, statuses: Iterable[int], default: int = 200) -> None:
        self.script = list(statuses)
        self.default = default

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.attempts += 1
        status = self.script.pop(0) if self.script else self.default
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # a slow receiver
        if 200 <= status < 300:
            self.received.append(Received(dict(request.headers), body))
            self.arrived.set()
        text = self.reply if self.reply is not None else ("ok" if status < 300 else "nope")
        return Response(text, status_code=status, headers=self.headers)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests were accepted."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                if len(self.received) >= count:
                    break
                await self.arrived.wait()
        return self.received
