"""The outbound HTTP client every sink shares: a small interface and its aiohttp
implementation.

Sinks see only ``HttpClient`` (``post`` and a streamed ``get``), ``Answer`` and
``TransportError``, so a unit test injects a fake transport and no sink depends on the
library. aiohttp is the implementation because the delivery path is dominated by the cost of
one POST: measured with ``../shared/tools/client_bench.py`` on the project's 2-core machine,
0.17-0.22 ms of CPU per request, against 0.52-0.68 ms for httpx on the httpx-aiohttp
transport and 1.5 ms for httpx itself (see the README's Dependencies table).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import aiohttp

MAX_CONNECTIONS = 200


class TransportError(Exception):
    """No HTTP answer: the connection failed or timed out. The message is short and never
    names the URL (it may carry a secret, as Slack's webhook URLs do)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete HTTP answer; ``headers`` look up case-insensitively."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Streamed(Protocol):
    """An answer whose body is read in chunks (``get``)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class HttpClient(Protocol):
    """What sinks need from HTTP. Both methods raise ``TransportError`` when no answer
    came; any answer, whatever its status, is returned."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Answer:
        """POST ``body``; redirects are not followed."""
        ...

    def get(self, url: str, timeout_s: float) -> AbstractAsyncContextManager[Streamed]:
        """``async with client.get(url, t) as answer``: a streamed GET, redirects followed."""
        ...


def _failure(exc: BaseException) -> TransportError:
    if isinstance(exc, TimeoutError):
        return TransportError("timed out", timed_out=True)
    return TransportError(f"connection failed ({type(exc).__name__})")


@dataclass(slots=True)
class _AiohttpStreamed:
    response: aiohttp.ClientResponse

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self.response.content.iter_chunked(64 * 1024):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(exc) from exc


class AiohttpClient:
    """``HttpClient`` on one ``aiohttp.ClientSession`` (create it inside the event loop:
    ``async with AiohttpClient() as client``). Proxies come from ``HTTP(S)_PROXY`` /
    ``NO_PROXY`` as with httpx; without them the per-request environment lookup is skipped."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        import urllib.request

        import aiohttp

        self._aiohttp = aiohttp
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
            trust_env=bool(urllib.request.getproxies()),
        )
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._post_timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def __aenter__(self) -> AiohttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def aclose(self) -> None:
        await self._session.close()

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """``seconds`` for each phase, as httpx applies a timeout: to connect (a pooled
        connection included) and for each read; no bound on the whole exchange, so a
        large image streams as long as it keeps coming."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = self._aiohttp.ClientTimeout(
                total=None, connect=seconds, sock_read=seconds
            )
        return timeout

    def _post_timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """``seconds`` for the whole POST (its answer is small): one timer per request,
        where a per-read timeout re-arms one on every chunk (~4 % of a delivery's CPU)."""
        timeout = self._post_timeouts.get(seconds)
        if timeout is None:
            timeout = self._post_timeouts[seconds] = self._aiohttp.ClientTimeout(
                total=seconds, connect=seconds
            )
        return timeout

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> Answer:
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=self._post_timeout(timeout_s),
                allow_redirects=False,
            ) as response:
                return Answer(response.status, response.headers, await response.read())
        except (self._aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(exc) from exc

    @asynccontextmanager
    async def _get(self, url: str, timeout_s: float) -> AsyncIterator[Streamed]:
        try:
            response = await self._session.get(url, timeout=self._timeout(timeout_s))
        except (self._aiohttp.ClientError, TimeoutError) as exc:
            raise _failure(exc) from exc
        async with response:  # releases the connection, whatever happens inside
            yield _AiohttpStreamed(response)

    def get(self, url: str, timeout_s: float) -> AbstractAsyncContextManager[Streamed]:
        return self._get(url, timeout_s)
