"""``GET /v1/stream`` on real sockets: the SSE wire format, filters, resuming after
``Last-Event-ID``, keep-alives and refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.feed import FeedFilter, FeedItem
from receiver.routes import stream as stream_route
from receiver.tail import stream_items
from tests.helpers.stack import API_TOKEN, Stack, running_stack

ROUTE = '[[routes]]\nsinks = ["file"]\nevents = ["upscale.*"]\n'


async def collect(
    items: AsyncIterator[FeedItem], until: str, job_id: str | None = None, timeout: float = 10
) -> list[FeedItem]:
    """Items until one of type ``until`` (for ``job_id``, if given) arrived."""
    found: list[FeedItem] = []
    async with asyncio.timeout(timeout):
        async for item in items:
            found.append(item)
            data = item.data.get("data", item.data)
            if item.type == until and (job_id is None or data.get("job_id") == job_id):
                return found
    raise AssertionError("the stream ended")


def events_of(items: list[FeedItem], job_id: str) -> list[FeedItem]:
    return [
        i for i in items if i.type.startswith("upscale.") and i.data["data"]["job_id"] == job_id
    ]


def without_deliveries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job view's events as sinks get them (the view adds each one's deliveries)."""
    return [{k: v for k, v in event.items() if k != "deliveries"} for event in events]


async def test_stream_carries_committed_events_in_order_and_resumes(tmp_path: Path) -> None:
    """A client connected before a submit sees each of the job's events as the API
    stores them; reconnecting with ``Last-Event-ID`` resumes right after that event;
    ``job_id`` without a cursor replays the job's history."""
    async with running_stack(tmp_path, extra_config=ROUTE) as stack:
        connected = asyncio.Event()
        live = stream_items(stack.base_url, API_TOKEN, FeedFilter(), connected=connected)
        first = asyncio.ensure_future(live.__anext__())
        await asyncio.wait_for(connected.wait(), 10)  # at the head: what commits from now
        job = await stack.submit(provider="apiframe", parent_id="grid-1", action="U1")
        items = [await first]
        items += await collect(live, "upscale.completed", job["job_id"])
        await live.aclose()
        seen = events_of(items, job["job_id"])
        stored = without_deliveries((await stack.wait_job(job["job_id"], "completed"))["events"])
        assert [i.data for i in seen] == stored
        assert seen[-1].type == "upscale.completed"
        assert len(seen) >= 2  # progress, then completed

        resumed = stream_items(
            stack.base_url,
            API_TOKEN,
            FeedFilter(job_id=job["job_id"]),
            last_event_id=seen[0].cursor,
        )
        rest = await collect(resumed, "upscale.completed", job["job_id"])
        await resumed.aclose()
        # the job's delivery outcomes come too (they carry its job_id): compare events
        assert [i.cursor for i in events_of(rest, job["job_id"])] == [i.cursor for i in seen[1:]]

        history = stream_items(stack.base_url, API_TOKEN, FeedFilter(job_id=job["job_id"]))
        replayed = await collect(history, "upscale.completed", job["job_id"])
        await history.aclose()
        assert [i.data for i in events_of(replayed, job["job_id"])] == stored


async def test_wire_format_filters_and_keepalive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``event:``/``data:``/``id:`` per message, one JSON object per data line; a
    ``type`` filter drops the rest; an idle stream sends keep-alive comments."""
    monkeypatch.setattr(stream_route, "KEEPALIVE_S", 0.3)
    async with running_stack(tmp_path, extra_config=ROUTE) as stack:
        job = await stack.submit(provider="apiframe", parent_id="grid-1", action="U2", ref="o-7")
        await stack.wait_job(job["job_id"], "completed")
        lines: list[str] = []
        async with (
            asyncio.timeout(10),
            stack.api.stream(
                "GET",
                "/v1/stream",
                params={"ref": "o-7", "type": "upscale.completed", "last_event_id": "0"},
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            async for line in response.aiter_lines():
                lines.append(line)
                if line == ": keep-alive":
                    break
        messages = [m for m in "\n".join(lines).split("\n\n") if m.startswith("id: ")]
        assert len(messages) == 1
        id_line, event_line, data_line = messages[0].split("\n")
        assert event_line == "event: upscale.completed"
        assert data_line.startswith("data: {")
        event = json.loads(data_line.removeprefix("data: "))
        assert event["data"]["job_id"] == job["job_id"]
        assert event["data"]["ref"] == "o-7"
        assert id_line.removeprefix("id: ")
        assert lines[0] == "retry: 2000"


async def test_stream_refuses_without_token_and_with_a_bad_cursor(tmp_path: Path) -> None:
    async with running_stack(tmp_path, extra_config=ROUTE) as stack:
        async with httpx.AsyncClient(base_url=stack.base_url) as anonymous:
            response = await anonymous.get("/v1/stream")
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        response = await stack.api.get("/v1/stream", headers={"last-event-id": "not-a-cursor"})
        assert response.status_code == 400
        assert response.json()["error"] == "bad_request"
        response = await stack.api.get("/v1/stream", params={"job_id": "x" * 500})
        assert response.status_code == 400


async def _first_line(stack: Stack) -> str:
    async with stack.api.stream("GET", "/v1/stream") as response:
        async for line in response.aiter_lines():
            return line
    return ""


async def test_a_client_that_leaves_frees_its_stream(tmp_path: Path) -> None:
    """Disconnecting clients end their streams (the server can shut down at once)."""
    async with running_stack(tmp_path, extra_config=ROUTE) as stack:
        for _ in range(3):
            assert await asyncio.wait_for(_first_line(stack), 5) == "retry: 2000"
