"""What every provider simulator shares: per-task knobs, a task book that advances
with time, a callback sender, real PNG images to point results at, and the small
request helpers (API key check, JSON body, image route).

Knobs are chosen per task through the *parent id* you submit, as dash- or
underscore-separated words (``grid-fail``, ``abc_nocallback_delay2000``):

==============  ===========================================================
``fail``        the task ends failed
``moderate``    the task ends moderated (provider's moderation wording)
``cancel``      the task ends cancelled (where the provider has that state)
``nocallback``  never call back (the poll endpoint still answers)
``twice``       send the final callback twice
``outoforder``  send the final callback before a progress callback
``delay<ms>``   wait this long before the first callback (default 30 ms)
``ratelimit``   answer the submit with the provider's 429
``stuck``       never finish (callbacks stop at progress; polls say running)
``slow<ms>``    the task takes this long to finish (default 60 ms)
==============  ===========================================================
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import struct
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from simulators.clock import WALL_CLOCK, Clock

_WORD = re.compile(r"[A-Za-z]+\d*")


def parent_words(parent_id: str) -> set[str]:
    """The lower-cased knob words of a parent id (``abc_fail-delay20`` → fail, delay20…);
    simulators read their own provider-specific words from it too."""
    return {w.lower() for w in _WORD.findall(parent_id)}


def own_base_url(request: Request) -> str:
    """The simulator's own URL root, mount prefix included (``http://host:port/kie``):
    ``request.base_url`` is the top-level app's root, which misses the mount."""
    return str(request.url.replace(path=request.scope.get("root_path", ""), query="")).rstrip("/")


def authorised(request: Request, *accepted: str) -> bool:
    """True when the ``Authorization`` header is one of ``accepted`` (``Bearer <key>``
    …), compared in constant time."""
    given = request.headers.get("authorization", "").encode()
    return any(hmac.compare_digest(given, value.encode()) for value in accepted)


async def read_json_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None when it is not JSON or not an object."""
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def iso_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Knobs:
    fail: bool = False
    moderate: bool = False
    cancel: bool = False
    no_callback: bool = False
    twice: bool = False
    out_of_order: bool = False
    rate_limit: bool = False
    stuck: bool = False
    delay_s: float = 0.03
    duration_s: float = 0.06

    @classmethod
    def from_parent(cls, parent_id: str) -> Knobs:
        words = parent_words(parent_id)
        delay_s, duration_s = 0.03, 0.06
        for word in words:
            if word.startswith("delay") and word[5:].isdigit():
                delay_s = int(word[5:]) / 1000
            if word.startswith("slow") and word[4:].isdigit():
                duration_s = int(word[4:]) / 1000
        return cls(
            fail="fail" in words,
            moderate="moderate" in words,
            cancel="cancel" in words,
            no_callback="nocallback" in words,
            twice="twice" in words,
            out_of_order="outoforder" in words,
            rate_limit="ratelimit" in words,
            stuck="stuck" in words,
            delay_s=delay_s,
            duration_s=duration_s,
        )


@dataclass(slots=True)
class SimTask:
    """One task at a simulated provider; its state is a function of the time elapsed on
    ``clock`` since ``created_at`` (stamped from ``clock`` when the task is made)."""

    id: str
    parent_id: str
    action: str
    knobs: Knobs
    image_base: str
    callback_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    clock: Clock = field(default=WALL_CLOCK, repr=False, compare=False)
    created_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.created_at = self.clock.now()

    @property
    def elapsed_s(self) -> float:
        """Seconds since the task was made, on its clock."""
        return self.clock.now() - self.created_at

    @property
    def finishes_at(self) -> float:
        """When (on its clock) the task finishes, unless it is stuck."""
        return self.created_at + self.knobs.delay_s + self.knobs.duration_s

    def wall_time(self, at: float) -> float:
        """``at`` (a time on the task's clock) as a Unix timestamp."""
        return time.time() - (self.clock.now() - at)

    @property
    def finished(self) -> bool:
        if self.knobs.stuck:
            return False
        return self.clock.now() >= self.finishes_at

    @property
    def outcome(self) -> str:
        """``completed``, ``failed``, ``moderated`` or ``cancelled`` (once finished)."""
        if self.knobs.moderate:
            return "moderated"
        if self.knobs.cancel:
            return "cancelled"
        if self.knobs.fail:
            return "failed"
        return "completed"

    @property
    def progress(self) -> int:
        if self.finished:
            return 100
        elapsed = self.elapsed_s - self.knobs.delay_s
        return max(0, min(90, int(100 * elapsed / max(self.knobs.duration_s, 0.001))))

    @property
    def image_url(self) -> str:
        return f"{self.image_base}/images/{self.id}.png"

    def poll_phase(self, waiting: str) -> str:
        """The phase a poll shows: ``final`` once finished, ``progress`` once started
        (or stuck running), else ``waiting`` (the provider's word for not started)."""
        if self.finished:
            return "final"
        return "progress" if self.progress > 0 or self.knobs.stuck else waiting


class TaskBook:
    """The tasks one simulator knows, by id; ``polls`` counts the polls each was
    answered (a test waits on it instead of sleeping)."""

    def __init__(self) -> None:
        self.tasks: dict[str, SimTask] = {}
        self.submissions: list[dict[str, Any]] = []
        self.polls: Counter[str] = Counter()

    def add(self, task: SimTask) -> SimTask:
        self.tasks[task.id] = task
        return task

    def get(self, task_id: str) -> SimTask | None:
        return self.tasks.get(task_id)

    def polled(self, task_id: str) -> SimTask | None:
        """``get`` for a poll: a known task's poll is counted in ``polls``."""
        task = self.tasks.get(task_id)
        if task is not None:
            self.polls[task_id] += 1
        return task


def new_task_id() -> str:
    return str(uuid.uuid4())


BodyFor = Callable[[SimTask, str], Mapping[str, Any]]
"""(task, phase) -> callback JSON, phase being ``progress`` or ``final``."""


class CallbackSender:
    """Posts a task's callbacks in the background: progress, then the final body,
    bent by the task's knobs, at the times the task's clock says. Tracks its tasks so a
    server can drain them."""

    def __init__(
        self, headers_for: Callable[[SimTask, bytes], Mapping[str, str]] | None = None
    ) -> None:
        self._headers_for = headers_for or (lambda task, body: {})
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[tuple[str, int | None]] = []

    def start(self, task: SimTask, body_for: BodyFor, *, progress_posts: bool = True) -> None:
        if task.callback_url is None or task.knobs.no_callback:
            return
        job = asyncio.create_task(self._run(task, body_for, progress_posts))
        self._tasks.add(job)
        job.add_done_callback(self._tasks.discard)

    async def _run(self, task: SimTask, body_for: BodyFor, progress_posts: bool) -> None:
        knobs = task.knobs
        await task.clock.sleep_until(task.created_at + knobs.delay_s)
        async with httpx.AsyncClient(timeout=10) as client:
            if progress_posts and not knobs.out_of_order:
                await self._post(client, task, body_for(task, "progress"))
            if knobs.stuck:
                return
            if not knobs.out_of_order:
                await task.clock.sleep_until(task.finishes_at)
            await self._post(client, task, body_for(task, "final"))
            if progress_posts and knobs.out_of_order:
                await self._post(client, task, body_for(task, "progress"))
            if knobs.twice:
                await self._post(client, task, body_for(task, "final"))

    async def _post(
        self, client: httpx.AsyncClient, task: SimTask, body: Mapping[str, Any]
    ) -> None:
        raw = json.dumps(body).encode()
        headers = {"content-type": "application/json", **self._headers_for(task, raw)}
        assert task.callback_url is not None
        for _attempt in range(3):
            try:
                response = await client.post(task.callback_url, content=raw, headers=headers)
            except httpx.HTTPError:
                self.sent.append((task.id, None))
                await asyncio.sleep(0.2)
                continue
            self.sent.append((task.id, response.status_code))
            if response.status_code < 500:
                return
            await asyncio.sleep(0.2)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _image(request: Request) -> Response:
    return Response(png_bytes(request.path_params["name"]), media_type="image/png")


def simulator_app(
    routes: list[BaseRoute], book: TaskBook, sender: CallbackSender | None = None
) -> Starlette:
    """A simulator's ASGI app: its ``routes`` plus ``GET /images/{name}.png`` (what
    ``SimTask.image_url`` points at); ``app.state.book`` holds its tasks and
    ``app.state.sender``, when it calls back, its callbacks."""
    app = Starlette(routes=[*routes, Route("/images/{name}.png", _image, methods=["GET"])])
    app.state.book = book
    if sender is not None:
        app.state.sender = sender
    return app


def png_bytes(seed: str, size: int = 16) -> bytes:
    """A small, valid RGB PNG whose colour depends on ``seed``."""
    digest = zlib.crc32(seed.encode())
    pixel = bytes(((digest >> 16) & 255, (digest >> 8) & 255, digest & 255))
    raw = b"".join(b"\x00" + pixel * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
