"""``GET /v1/stream``: Server-Sent Events of committed events and delivery outcomes.

Each message is ``id:`` a resumable cursor, ``event:`` the type (``upscale.completed``,
``delivery.retry_scheduled`` …) and ``data:`` one JSON object (the event sinks get, or
the outcome: delivery id, event id, sink, attempt, status …). Query parameters
``job_id``, ``ref``, ``provider``, ``sink`` and ``type`` (comma-separated, ``*`` globs:
``type=delivery.*``) filter. A reconnecting client sends ``Last-Event-ID`` (or
``?last_event_id=``) and resumes right after it; a new one starts with what commits
from now on — or, with ``job_id``, with the job's whole history so far.

The feed is the store's, so the stream shows what every process committed: it wakes
on the store's notifications (LISTEN/NOTIFY on PostgreSQL, the process's own commits
on SQLite) and looks again at least every second or so either way. A comment line
every ``KEEPALIVE_S`` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from receiver.errors import BadRequest
from receiver.feed import FeedFilter, FeedItem
from receiver.routes.common import require_api_token, store_of
from receiver.store import Store

KEEPALIVE_S = 15.0
BATCH = 200
RECONNECT_MS = 2000
_MAX_PARAM = 200


def stream_filter(request: Request) -> FeedFilter:
    """The ``FeedFilter`` of the query string; ``BadRequest`` for an absurd value."""
    params = request.query_params
    values: dict[str, str | None] = {}
    for name in ("job_id", "ref", "provider", "sink"):
        value = params.get(name) or None
        if value is not None and len(value) > _MAX_PARAM:
            raise BadRequest(f"{name!r} is too long", field=name)
        values[name] = value
    types = tuple(
        part.strip() for raw in params.getlist("type") for part in raw.split(",") if part.strip()
    )
    if len(types) > 20 or any(len(t) > _MAX_PARAM for t in types):
        raise BadRequest("'type' lists too many or too long types", field="type")
    return FeedFilter(types=types, **values)


def sse_message(item: FeedItem) -> str:
    """One SSE message: ``id``, ``event`` and a one-line JSON ``data``."""
    data = json.dumps(item.data, separators=(",", ":"), sort_keys=True)
    return f"id: {item.cursor}\nevent: {item.type}\ndata: {data}\n\n"


async def stream(request: Request) -> Response:
    require_api_token(request)
    store = store_of(request)
    where = stream_filter(request)
    after = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if not after:
        after = None if where.job_id else await store.feed_head()
    # read once before answering: a malformed cursor is a 400, not a broken stream
    first = await store.read_feed(after, where, limit=BATCH)
    return StreamingResponse(
        _messages(request, store, where, after, first),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _messages(
    request: Request, store: Store, where: FeedFilter, after: str | None, items: list[FeedItem]
) -> AsyncIterator[str]:
    yield f"retry: {RECONNECT_MS}\n: stream from {after or 'the start'}\n\n"
    gone = asyncio.create_task(_disconnected(request))
    last_sent = time.monotonic()
    try:
        while not gone.done():
            for item in items:
                yield sse_message(item)
                after = item.cursor
            if items:
                last_sent = time.monotonic()
            if len(items) < BATCH:
                idle_for = KEEPALIVE_S - (time.monotonic() - last_sent)
                if idle_for <= 0:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                    idle_for = KEEPALIVE_S
                waiter = asyncio.create_task(store.wait_for_feed(idle_for))
                await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
            items = [] if gone.done() else await store.read_feed(after, where, limit=BATCH)
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body was read: only disconnects remain)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


routes = [Route("/v1/stream", stream, methods=["GET"])]
