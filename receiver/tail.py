"""Following the feed from a terminal: ``relay tail`` and ``relay submit … --wait``.

``relay tail`` reads ``GET /v1/stream`` (reconnecting with ``Last-Event-ID``) and prints
one readable line per event and per delivery attempt. ``relay submit --wait`` follows
the store's feed for its job and keeps one live status line (progress, then each
sink's outcome), exiting 0 once every routed delivery is delivered, 1 on a failed job
or a dead letter.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from receiver.feed import FeedFilter, FeedItem
from receiver.store import Store

RECONNECT_S = 1.0


# -- one line per item ----------------------------------------------------------------------


def _clock(text: Any) -> str:
    """``2026-11-23T18:00:05Z`` → ``18:00:05`` (anything else as is)."""
    if not isinstance(text, str) or "T" not in text:
        return "--:--:--"
    return text.split("T", 1)[1].rstrip("Z")[:12]


def _short(text: Any, width: int = 120) -> str:
    value = " ".join(str(text).split())
    return value if len(value) <= width else value[: width - 1] + "…"


def render_line(item: FeedItem) -> str:
    """One readable line for a feed item (an event or a delivery attempt's outcome)."""
    data = item.data
    if item.type.startswith("delivery."):
        parts = [
            _clock(data.get("timestamp")),
            f"{item.type:<24}",
            str(data.get("job_id") or "-"),
            f"sink={data.get('sink')}",
            f"attempt {data.get('attempt')}",
        ]
        if data.get("status") is not None:
            parts.append(f"HTTP {data['status']}")
        if data.get("duration_ms") is not None:
            parts.append(f"{data['duration_ms']:.0f} ms")
        if data.get("next_attempt_at"):
            parts.append(f"next {_clock(data['next_attempt_at'])}")
        if data.get("error"):
            parts.append(_short(data["error"], 160))
        return "  ".join(parts)
    event: dict[str, Any] = data["data"] if isinstance(data.get("data"), dict) else {}
    parts = [
        _clock(data.get("timestamp")),
        f"{item.type:<24}",
        str(event.get("job_id") or "-"),
        str(event.get("provider") or "-"),
    ]
    if event.get("ref"):
        parts.append(f"ref={event['ref']}")
    if event.get("action"):
        parts.append(str(event["action"]))
    if item.type == "upscale.progress" and event.get("progress") is not None:
        parts.append(f"{event['progress']}%")
    if event.get("image_url"):
        parts.append(str(event["image_url"]))
    error = event.get("error")
    if isinstance(error, dict):
        parts.append(_short(f"{error.get('code')}: {error.get('message')}", 160))
    return "  ".join(parts)


# -- the SSE client -------------------------------------------------------------------------


def parse_sse(lines: list[str]) -> FeedItem | None:
    """One SSE message (its lines, without the blank one) → a ``FeedItem``; None for a
    comment or a message without an id."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
    if "id" not in fields or "data" not in fields:
        return None
    data = json.loads("\n".join(fields["data"]))
    kind = fields.get("event", ["message"])[-1]
    return FeedItem(fields["id"][-1], kind, data if isinstance(data, dict) else {})


async def stream_items(
    base_url: str,
    token: str,
    where: FeedFilter,
    *,
    last_event_id: str | None = None,
    client: httpx.AsyncClient | None = None,
    connected: asyncio.Event | None = None,
) -> AsyncIterator[FeedItem]:
    """Items of ``GET /v1/stream`` forever, reconnecting after ``Last-Event-ID`` when the
    connection drops. An HTTP error answer (401, 400 …) raises ``httpx.HTTPStatusError``.
    ``connected`` is set once the stream answered (what commits from then on comes)."""
    params: dict[str, str] = {
        name: value
        for name, value in (
            ("job_id", where.job_id),
            ("ref", where.ref),
            ("provider", where.provider),
            ("sink", where.sink),
        )
        if value
    }
    if where.types:
        params["type"] = ",".join(where.types)
    own = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
    try:
        while True:
            headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
            if last_event_id:
                headers["last-event-id"] = last_event_id
            try:
                async with http.stream(
                    "GET", base_url.rstrip("/") + "/v1/stream", params=params, headers=headers
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        response.raise_for_status()
                    if connected is not None:
                        connected.set()
                    lines: list[str] = []
                    async for line in response.aiter_lines():
                        if line:
                            lines.append(line)
                            continue
                        item = parse_sse(lines)
                        lines = []
                        if item is not None:
                            last_event_id = item.cursor
                            yield item
            except httpx.TransportError:
                pass
            await asyncio.sleep(RECONNECT_S)
    finally:
        if own:
            await http.aclose()


async def tail(base_url: str, token: str, where: FeedFilter, out: TextIO = sys.stdout) -> None:
    """Print every item of the stream as one line, until interrupted."""
    async for item in stream_items(base_url, token, where):
        print(render_line(item), file=out, flush=True)


# -- submit --wait --------------------------------------------------------------------------


async def store_items(
    store: Store, where: FeedFilter, after: str | None, *, poll_s: float = 1.0
) -> AsyncIterator[FeedItem]:
    """The store's feed after ``after``, forever (wakes on the store's notifications)."""
    while True:
        items = await store.read_feed(after, where, limit=200)
        for item in items:
            after = item.cursor
            yield item
        if len(items) < 200:
            await store.wait_for_feed(poll_s)


@dataclass
class JobWatch:
    """What ``submit --wait`` knows of its job: progress, terminal event, and each
    delivery's latest outcome (by delivery id)."""

    job_id: str
    progress: int | None = None
    status: str = "submitted"
    terminal: bool = False
    failed: bool = False
    outcomes: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    expected: int | None = None  # deliveries routed, once the terminal event committed

    def feed(self, item: FeedItem) -> None:
        data = item.data
        if item.type.startswith("delivery."):
            self.outcomes[str(data.get("delivery_id"))] = {**data, "type": item.type}
            return
        event: dict[str, Any] = data["data"] if isinstance(data.get("data"), dict) else {}
        if event.get("progress") is not None:
            self.progress = int(event["progress"])
        self.status = str(event.get("status") or self.status)
        if item.type in ("upscale.completed", "upscale.failed"):
            self.terminal = True
            self.failed = item.type == "upscale.failed"

    @property
    def settled(self) -> bool:
        """Terminal, and every routed delivery delivered or dead."""
        if not self.terminal or self.expected is None:
            return False
        final = [o for o in self.outcomes.values() if o["type"] != "delivery.retry_scheduled"]
        return len(final) >= self.expected

    @property
    def ok(self) -> bool:
        return (
            self.settled
            and not self.failed
            and all(o["type"] == "delivery.delivered" for o in self.outcomes.values())
        )

    def status_line(self) -> str:
        shown = f"{self.progress}%" if self.progress is not None else "…"
        line = f"{self.job_id}  {self.status}  {shown}"
        for outcome in sorted(self.outcomes.values(), key=lambda o: str(o.get("sink"))):
            line += f"  {outcome.get('sink')}: {_verdict(outcome)}"
        return line


def _verdict(outcome: Mapping[str, Any]) -> str:
    kind = outcome["type"]
    status = f" HTTP {outcome['status']}" if outcome.get("status") is not None else ""
    if kind == "delivery.delivered":
        return f"delivered{status}"
    if kind == "delivery.dead":
        return f"dead{status} ({_short(outcome.get('error'), 60)})"
    return f"retrying{status} (attempt {outcome.get('attempt')})"


async def wait_for_job(
    store: Store,
    job_id: str,
    after: str | None,
    *,
    timeout_s: float,
    out: TextIO = sys.stderr,
) -> int:
    """Follow ``job_id`` from the cursor ``after`` (taken before the submission) until
    it settles; 0 when every routed delivery was delivered, 1 otherwise (a failed job,
    a dead letter, or ``timeout_s`` passed). The status line goes to ``out`` (stderr:
    stdout keeps the job's JSON alone), rewritten in place on a terminal."""
    from receiver.store import DeliveryFilter

    watch = JobWatch(job_id)
    live = out.isatty()
    last = ""

    def show(final: bool = False) -> None:
        nonlocal last
        line = watch.status_line()
        if live:
            print("\r\x1b[2K" + line, end="\n" if final else "", file=out, flush=True)
        elif line != last or final:
            print(line, file=out, flush=True)
        last = line

    async def follow() -> None:
        async for item in store_items(store, FeedFilter(job_id=job_id), after):
            watch.feed(item)
            if watch.terminal and watch.expected is None:
                # the terminal event and its deliveries commit together: count them now
                routed = await store.list_deliveries(DeliveryFilter(job_id=job_id), limit=1000)
                watch.expected = len(routed)
            show()
            if watch.settled:
                return

    show()
    try:
        await asyncio.wait_for(follow(), timeout=timeout_s)
    except TimeoutError:
        show(final=True)
        print(f"relay: gave up waiting after {timeout_s:g} s", file=sys.stderr)
        return 1
    show(final=True)
    return 0 if watch.ok else 1
