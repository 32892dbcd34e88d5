"""The feed behind ``GET /v1/stream``: committed events and delivery outcomes, in order.

Each committed event and each recorded delivery outcome appends one feed entry *in the
same transaction*, so the feed holds exactly what was committed, in commit order, with
a cursor that a reader resumes from (SSE ``Last-Event-ID``). Entries carry the columns
the stream filters on (job, ref, provider, sink, type) and are pruned with the events
after ``[relay] retention_days``.

Entry types: the event types (``upscale.progress`` … with the event JSON sinks get as
data) and ``delivery.delivered``, ``delivery.retry_scheduled``, ``delivery.dead``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from receiver.events import Delivery, Event, isoformat


class OutcomeType(StrEnum):
    """The feed type of a delivery outcome."""

    DELIVERED = "delivery.delivered"
    RETRY_SCHEDULED = "delivery.retry_scheduled"
    DEAD = "delivery.dead"


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry to append: its type, the columns the stream filters on, and its data.

    ``body`` is None for an event entry (its data is the stored event JSON, read back
    from the events table) and the outcome JSON otherwise."""

    type: str
    created_at: datetime
    job_id: str | None = None
    ref: str | None = None
    provider: str | None = None
    sink: str | None = None
    event_id: str | None = None
    delivery_id: str | None = None
    body: str | None = None


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One entry as read back: ``cursor`` resumes right after it."""

    cursor: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """What a reader wants; None / empty matches anything. ``types`` are exact types or
    globs with ``*`` (``delivery.*``)."""

    job_id: str | None = None
    ref: str | None = None
    provider: str | None = None
    sink: str | None = None
    types: tuple[str, ...] = ()


def event_entry(event: Event, now: datetime) -> FeedEntry:
    """The entry for a committed event."""
    data = event.data
    return FeedEntry(
        type=event.type.value,
        created_at=now,
        job_id=data["job_id"],
        ref=data["ref"],
        provider=data["provider"],
        event_id=event.id,
    )


def outcome_entry(
    kind: OutcomeType,
    delivery: Delivery,
    event: Event,
    *,
    attempt: int,
    status: int | None,
    error: str | None,
    duration_ms: float | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> FeedEntry:
    """The entry for one delivery attempt's outcome."""
    data = event.data
    body = {
        "delivery_id": delivery.id,
        "event_id": event.id,
        "event_type": event.type.value,
        "job_id": delivery.job_id,
        "ref": data["ref"],
        "provider": data["provider"],
        "sink": delivery.sink,
        "attempt": attempt,
        "state": {
            OutcomeType.DELIVERED: "delivered",
            OutcomeType.RETRY_SCHEDULED: "pending",
            OutcomeType.DEAD: "dead",
        }[kind],
        "status": status,
        "error": error,
        "duration_ms": None if duration_ms is None else round(duration_ms, 1),
        "next_attempt_at": isoformat(next_attempt_at),
        "timestamp": isoformat(now),
    }
    return FeedEntry(
        type=kind.value,
        created_at=now,
        job_id=delivery.job_id,
        ref=data["ref"],
        provider=data["provider"],
        sink=delivery.sink,
        event_id=event.id,
        delivery_id=delivery.id,
        body=orjson.dumps(body).decode(),  # a tenth of json.dumps; the same compact JSON
    )


def entry_values(entry: FeedEntry) -> tuple[Any, ...]:
    """The values of ``FEED_COLUMNS`` (times left to the backend)."""
    return (
        entry.type,
        entry.job_id,
        entry.ref,
        entry.provider,
        entry.sink,
        entry.event_id,
        entry.delivery_id,
        entry.body,
    )


FEED_COLUMNS = "type, job_id, ref, provider, sink, event_id, delivery_id, body"


def like_pattern(glob: str) -> str:
    """A type glob (``delivery.*``) as a LIKE pattern with ``\\`` as the escape."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def filter_sql(where: FeedFilter, placeholder: Any) -> tuple[str, list[Any]]:
    """SQL (over table alias ``f``) matching ``where`` and its parameters;
    ``placeholder(n)`` spells the n-th parameter."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("job_id", where.job_id),
        ("ref", where.ref),
        ("provider", where.provider),
        ("sink", where.sink),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"f.{column} = {placeholder(len(params))}")
    if where.types:
        alternatives = []
        for glob in where.types:
            params.append(like_pattern(glob))
            alternatives.append(f"f.type LIKE {placeholder(len(params))} ESCAPE '\\'")
        clauses.append("(" + " OR ".join(alternatives) + ")")
    return (" AND ".join(clauses) or "1 = 1"), params


def item_data(body: str | None) -> dict[str, Any]:
    """The data of a read-back entry (an event whose row was pruned reads as {})."""
    if body is None:
        return {}
    value = json.loads(body)
    return value if isinstance(value, dict) else {}
