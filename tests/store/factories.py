"""Jobs, events and ingests for store tests, all anchored at ``T0``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from receiver.events import (
    STATUS_FOR_STATE,
    CallbackMode,
    Event,
    Job,
    JobStatus,
    ProviderUpdate,
    UpdateState,
    build_event,
    new_id,
)
from receiver.store import Ingest, Store

T0 = datetime(2026, 11, 23, 18, 0, 0, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def make_job(**changes: object) -> Job:
    job = Job(
        id=new_id("job"),
        provider="apiframe",
        parent_id="parent-1",
        action="upscale_2x",
        ref="order-42",
        status=JobStatus.QUEUED,
        callback_mode=CallbackMode.WEBHOOK,
        created_at=T0,
        callback_secret="s3cret",
        sinks=("team", "archive"),
    )
    return replace(job, **changes)  # type: ignore[arg-type]


def make_event(
    job: Job | None,
    state: UpdateState = UpdateState.COMPLETED,
    *,
    progress: int | None = None,
    task: str = "task-1",
    now: datetime = T0,
) -> Event:
    update = ProviderUpdate(
        provider_task_id=task,
        state=state,
        progress=progress,
        image_url="https://cdn.example/1.png" if state is UpdateState.COMPLETED else None,
    )
    return build_event("apiframe", update, job, now=now.replace(microsecond=0))


def make_ingest(
    job: Job | None,
    state: UpdateState = UpdateState.COMPLETED,
    *,
    progress: int | None = None,
    sinks: tuple[str, ...] = ("team", "archive"),
    task: str = "task-1",
    now: datetime = T0,
) -> Ingest:
    return Ingest(
        event=make_event(job, state, progress=progress, task=task, now=now),
        job_id=job.id if job else None,
        job_status=STATUS_FOR_STATE[state] if job else None,
        sinks=sinks,
        now=now,
        provider_task_id=task,
        finished_at=now if state.terminal else None,
    )


async def seed_deliveries(store: Store, count: int, *, sinks: tuple[str, ...] = ("team",)) -> None:
    """``count`` events without a job, each with one delivery per sink, due at T0."""
    for n in range(count):
        assert await store.ingest(make_ingest(None, task=f"seed-{n}", sinks=sinks))


async def settle_feed(store: Store, count: int, timeout: float = 10.0) -> None:
    """Wait until the feed shows ``count`` entries. PostgreSQL shows an entry once every
    transaction older than it has finished, anywhere on the server: on a busy shared
    server that can be a few milliseconds after its own commit."""
    import asyncio
    import time

    from receiver.feed import FeedFilter

    deadline = time.monotonic() + timeout
    while len(await store.read_feed(None, FeedFilter(), limit=1000)) < count:
        assert time.monotonic() < deadline, f"the feed never showed {count} entries"
        await asyncio.sleep(0.01)
