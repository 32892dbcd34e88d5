"""What both SQL backends share: column lists, row decoding and delivery filters."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from receiver.events import CallbackMode, Delivery, DeliveryState, Job, JobStatus
from receiver.store.base import DeliveryFilter

TERMINAL = [status.value for status in JobStatus if status.terminal]
JOB_COLUMNS = (
    "id, provider, parent_id, action, ref, status, callback_mode, provider_task_id,"
    " callback_secret, sinks, created_at, submitted_at, finished_at, next_poll_at, deadline_at"
)
DELIVERY_COLUMNS = (
    "id, event_id, job_id, sink, state, attempts, next_attempt_at, last_status, last_error,"
    " created_at, updated_at"
)
#: ``DELIVERY_COLUMNS`` plus the type of the delivery's event (for listings)
DELIVERY_VIEW_COLUMNS = (
    DELIVERY_COLUMNS + ", (SELECT type FROM events WHERE events.id = deliveries.event_id)"
    " AS event_type"
)


class Row(Protocol):
    """``sqlite3.Row`` and ``asyncpg.Record`` alike: columns by name."""

    def __getitem__(self, key: str, /) -> Any: ...

    def keys(self) -> Any: ...


#: Decodes a stored time (None stays None); each backend passes its own.
TimeDecoder = Callable[[Any], datetime | None]


def statuses_behind(status: JobStatus) -> list[str]:
    """The statuses a job may move to ``status`` from: those ranked lower."""
    return [s.value for s in JobStatus if s.rank < status.rank]


def job_values(job: Job, time: Callable[[datetime | None], Any]) -> tuple[Any, ...]:
    """``job`` as the values of ``JOB_COLUMNS``, times encoded by ``time``."""
    return (
        job.id,
        job.provider,
        job.parent_id,
        job.action,
        job.ref,
        job.status.value,
        job.callback_mode.value,
        job.provider_task_id,
        job.callback_secret,
        None if job.sinks is None else json.dumps(list(job.sinks)),
        time(job.created_at),
        time(job.submitted_at),
        time(job.finished_at),
        time(job.next_poll_at),
        time(job.deadline_at),
    )


def job_from_row(row: Row, time: TimeDecoder) -> Job:
    sinks = row["sinks"]
    created_at = time(row["created_at"])
    assert created_at is not None  # NOT NULL column
    return Job(
        id=row["id"],
        provider=row["provider"],
        parent_id=row["parent_id"],
        action=row["action"],
        ref=row["ref"],
        status=JobStatus(row["status"]),
        callback_mode=CallbackMode(row["callback_mode"]),
        created_at=created_at,
        provider_task_id=row["provider_task_id"],
        callback_secret=row["callback_secret"],
        sinks=None if sinks is None else tuple(json.loads(sinks)),
        submitted_at=time(row["submitted_at"]),
        finished_at=time(row["finished_at"]),
        next_poll_at=time(row["next_poll_at"]),
        deadline_at=time(row["deadline_at"]),
    )


def delivery_from_row(row: Row, time: TimeDecoder) -> Delivery:
    created_at, updated_at = time(row["created_at"]), time(row["updated_at"])
    assert created_at is not None  # NOT NULL columns
    assert updated_at is not None
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        job_id=row["job_id"],
        sink=row["sink"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=time(row["next_attempt_at"]),
        last_status=row["last_status"],
        last_error=row["last_error"],
        created_at=created_at,
        updated_at=updated_at,
        # sqlite3.Row's ``in`` looks at values, not names: ask for the keys
        event_type=row["event_type"] if "event_type" in row.keys() else None,  # noqa: SIM118
    )


def filter_clause(
    where: DeliveryFilter, placeholder: Callable[[int], str]
) -> tuple[str, list[Any]]:
    """SQL matching ``where`` and its parameters; ``placeholder(n)`` spells the n-th one."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("id", where.delivery_id),
        ("state", where.state.value if where.state is not None else None),
        ("sink", where.sink),
        ("job_id", where.job_id),
        ("event_id", where.event_id),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"{column} = {placeholder(len(params))}")
    return (" AND ".join(clauses) or "TRUE"), params
