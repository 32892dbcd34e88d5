"""AiohttpClient, the sinks' shared client, against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from handlers.sinks.client import AiohttpClient, TransportError
from tests.helpers.servers import free_port, serve_app


async def _echo(request: Request) -> Response:
    body = await request.body()
    return Response(
        body[::-1],
        status_code=int(request.query_params.get("status", "200")),
        headers={"Retry-After": "3", "x-seen-type": request.headers["content-type"]},
    )


async def _slow(request: Request) -> Response:
    await asyncio.sleep(2)
    return Response("late")


async def _chunks(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for n in range(3):
            await asyncio.sleep(0.05)
            yield bytes([65 + n]) * 1000

    return StreamingResponse(parts(), media_type="image/png")


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route("/echo", _echo, methods=["POST"]),
            Route("/slow", _slow, methods=["POST"]),
            Route("/moved", lambda r: RedirectResponse("/echo", 307), methods=["POST", "GET"]),
            Route("/chunks", _chunks),
        ]
    )


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with serve_app(_app()) as url:
        yield url


async def test_post_returns_any_answer_with_its_headers(base: str) -> None:
    """Status, body and case-insensitive headers come back, 4xx/5xx included;
    redirects are not followed for a POST."""
    async with AiohttpClient() as client:
        answer = await client.post(f"{base}/echo?status=503", b"abc", {"content-type": "x/y"}, 5)
        assert (answer.status, answer.body, answer.ok) == (503, b"cba", False)
        assert answer.headers.get("retry-after") == "3"
        assert answer.headers["X-Seen-Type"] == "x/y"
        moved = await client.post(f"{base}/moved", b"", {}, 5)
        assert moved.status == 307


async def test_timeout_and_refused_connection_are_transport_errors() -> None:
    """No answer in time is ``timed out``; a closed port is a connection failure whose
    message does not name the URL (it may carry a secret)."""
    async with serve_app(_app()) as url, AiohttpClient() as client:
        with pytest.raises(TransportError) as slow:
            await client.post(f"{url}/slow", b"", {}, 0.3)
        assert slow.value.timed_out
        assert slow.value.message == "timed out"
    secret_url = f"http://127.0.0.1:{free_port()}/services/T0/B0/secret-token"
    async with AiohttpClient() as client:
        with pytest.raises(TransportError) as refused:
            await client.post(secret_url, b"", {}, 2)
    assert not refused.value.timed_out
    assert "secret-token" not in str(refused.value)
    assert refused.value.message.startswith("connection failed")


async def test_get_streams_chunks_and_follows_redirects(base: str) -> None:
    """A streamed GET yields the body in pieces (each read within the timeout, not the
    whole body), follows redirects, and closes cleanly."""
    async with AiohttpClient() as client:
        async with client.get(f"{base}/chunks", 0.5) as streamed:
            assert streamed.status == 200
            assert streamed.headers["content-type"] == "image/png"
            body = b"".join([chunk async for chunk in streamed.chunks()])
        assert body == b"A" * 1000 + b"B" * 1000 + b"C" * 1000
        async with client.get(f"{base}/moved", 5) as redirected:
            assert redirected.status == 405  # /echo is POST-only: the redirect was followed
    assert client.closed
