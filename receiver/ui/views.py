"""What each dashboard page shows, read through the ``Store`` (and the sink-health view
``GET /v1/sinks`` uses). Pages get plain dicts — the API's own JSON views — so a field
the API gains (a delivery's ``attempts`` rows, its ``event_type``) reaches the pages."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from receiver.events import Delivery, DeliveryState, Event, EventType, Job, JobStatus, isoformat
from receiver.store import DeliveryFilter, Store

JOBS_PAGE_LIMIT = 50
DELIVERIES_PAGE_LIMIT = 200
DEAD_COUNT_CAP = 1000


def image_of(events: list[Event]) -> str | None:
    """The image of a job's completed event, if it has an http(s) one."""
    for event in reversed(events):
        url = event.data.get("image_url")
        if event.type is EventType.COMPLETED and isinstance(url, str):
            return url if url.startswith(("https://", "http://")) else None
    return None


async def job_rows(
    store: Store, *, status: JobStatus | None, provider: str | None, ref: str | None
) -> list[dict[str, Any]]:
    """The jobs page: newest first, each with its thumbnail (from its events)."""
    jobs = await store.list_jobs(ref=ref, status=status, provider=provider, limit=JOBS_PAGE_LIMIT)
    events = await asyncio.gather(*(store.list_events(job.id) for job in jobs))
    return [
        {**job.view(), "created_at": isoformat(job.created_at), "image_url": image_of(found)}
        for job, found in zip(jobs, events, strict=True)
    ]


def delivery_row(delivery: Delivery, event: Event | None = None) -> dict[str, Any]:
    """A delivery as the API shows it, plus ``attempt_count`` and ``attempt_list``:
    the API's ``attempts`` is a count today and a list of attempt rows once they are
    recorded; the templates read these two and work with either."""
    row = delivery.view()
    attempts = row.get("attempts")
    if isinstance(attempts, list):
        row["attempt_list"], row["attempt_count"] = attempts, len(attempts)
    else:
        row["attempt_list"], row["attempt_count"] = [], attempts
    if "event_type" not in row:
        row["event_type"] = event.type.value if event is not None else None
    return row


async def timeline(store: Store, job: Job) -> list[dict[str, Any]]:
    """A job's life in order: created, submitted, every event (each callback or poll
    answer that the relay turned into an event) with its deliveries and each delivery's
    recorded attempts, finished."""
    events = await store.list_events(job.id)
    deliveries = await store.list_deliveries(DeliveryFilter(job_id=job.id), limit=1000)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for delivery in sorted(deliveries, key=lambda d: (d.created_at, d.sink)):
        row = delivery_row(delivery)
        row["attempt_list"] = [attempt.view() for attempt in await store.list_attempts(delivery.id)]
        by_event.setdefault(delivery.event_id, []).append(row)
    entries: list[tuple[datetime, int, dict[str, Any]]] = [
        (job.created_at, 0, {"kind": "created", "at": isoformat(job.created_at)})
    ]
    if job.submitted_at is not None:
        submitted = {"kind": "submitted", "at": isoformat(job.submitted_at)}
        entries.append((job.submitted_at, 1, submitted))
    for event in events:
        entry = {
            "kind": "event",
            "at": isoformat(event.timestamp),
            "event": event.as_dict(),
            "deliveries": by_event.get(event.id, []),
        }
        entries.append((event.timestamp, 2, entry))
    if job.finished_at is not None:
        finished = {"kind": "finished", "at": isoformat(job.finished_at)}
        entries.append((job.finished_at, 3, finished))
    # event times have second precision: within one second, the life-cycle order wins
    entries.sort(key=lambda e: (e[0].replace(microsecond=0), e[1]))
    return [entry for _, _, entry in entries]


def in_flight(job: Job, entries: list[dict[str, Any]]) -> bool:
    """Still moving: the job is not finished or a delivery of it is pending."""
    if not job.status.terminal:
        return True
    return any(
        d["state"] == DeliveryState.PENDING.value
        for entry in entries
        for d in entry.get("deliveries", [])
    )


async def delivery_rows(
    store: Store, *, state: DeliveryState | None, sink: str | None
) -> list[dict[str, Any]]:
    """The deliveries page (dead letters by default), each with its event's type."""
    found = await store.list_deliveries(
        DeliveryFilter(state=state, sink=sink), limit=DELIVERIES_PAGE_LIMIT
    )
    event_ids = sorted({d.event_id for d in found})
    events = await asyncio.gather(*(store.get_event(event_id) for event_id in event_ids))
    by_id = {event.id: event for event in events if event is not None}
    return [delivery_row(d, by_id.get(d.event_id)) for d in found]


async def dead_counts(store: Store, sinks: list[str]) -> dict[str, int]:
    """Dead deliveries per sink (counted up to ``DEAD_COUNT_CAP``)."""
    counts = await asyncio.gather(
        *(
            store.list_deliveries(
                DeliveryFilter(state=DeliveryState.DEAD, sink=name), limit=DEAD_COUNT_CAP
            )
            for name in sinks
        )
    )
    return {name: len(found) for name, found in zip(sinks, counts, strict=True)}
