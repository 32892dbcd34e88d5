"""The ``Store`` contract: jobs, events, deliveries and idempotency keys, durably."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from receiver.attempts import NewAttempt
from receiver.decision import Decision
from receiver.events import Delivery, DeliveryState, DueDelivery, Event, Job, JobStatus
from receiver.feed import FeedEntry
from receiver.sink_health import HealthChange
from receiver.store.observe import ObservableStore


@dataclass(frozen=True, slots=True)
class Ingest:
    """One provider update to commit atomically.

    ``event`` is inserted unless an event with its id exists (then nothing happens and
    ``ingest`` returns False). When inserted: one pending delivery per name in
    ``sinks`` (due at ``now``), and the job (if any) moves to ``job_status`` — only
    forward, never out of a terminal state — with ``finished_at`` and, when the job
    has none yet, ``provider_task_id``. A terminal status clears the job's
    ``next_poll_at``.
    """

    event: Event
    job_id: str | None
    job_status: JobStatus | None
    sinks: Sequence[str]
    now: datetime
    provider_task_id: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobLookup:
    """How a callback names its job: our ``job_id`` (a per-job callback URL), or else the
    provider's ``task_id`` (the earliest job bound to it) and, failing that, the
    reference the provider echoes (``correlation_id``: our job id, for that provider)."""

    job_id: str | None = None
    provider: str = ""
    task_id: str = ""
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What to record for one leased delivery after an attempt (or a release).

    ``decision`` says where the delivery goes (delivered, retry at, dead, released at)
    and the ``last_status`` / ``last_error`` it keeps; ``now`` is its ``updated_at``.
    The store applies it only while the delivery is still pending, and drops the lease.
    The attempt's own row, its feed entry and its sink-health change are written in
    the same transaction (and only when the outcome applied, except the health change:
    the sink answered either way).
    """

    delivery_id: str
    decision: Decision
    now: datetime
    attempt: NewAttempt | None = None  # the attempt's row (None for a release)
    feed: FeedEntry | None = None  # its entry in the stream's feed
    health: HealthChange | None = None  # what it says about the sink's shared circuit


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which deliveries to list or replay; None matches anything."""

    delivery_id: str | None = None
    state: DeliveryState | None = None
    sink: str | None = None
    job_id: str | None = None
    event_id: str | None = None


class Store(ObservableStore, Protocol):
    """Durable state of the relay. SQLite (one machine) and PostgreSQL (scale-out)
    implement it; one contract suite (``tests/store/``) runs against both.

    Every method is a coroutine and every write is committed (durable) before it
    returns: an acknowledged callback survives a crash. Times are timezone-aware UTC.

    Jobs
        ``create_job`` inserts a job, honouring an idempotency key: the same key with
        the same ``request_hash`` returns the existing job and ``False``; with another
        hash it raises ``IdempotencyMismatch``. ``mark_submitted`` records the
        provider's task id once the provider accepted the job (never moving a job that
        an early callback already advanced backwards). ``delete_job`` removes a job
        whose submission failed (and its idempotency key) so the client may retry.
    Events
        ``ingest`` commits an update (see ``Ingest``); the unique event id makes
        duplicates no-ops even when two processes race.
    Deliveries
        ``claim_due`` leases up to ``limit`` pending deliveries due at ``now`` (skipping
        ``exclude_sinks`` and those leased by someone else), for ``lease_s``; a worker
        that dies loses its lease and another claims the delivery. Each claim ends in
        one ``record_outcome`` (see ``DeliveryOutcome``): delivered, retry or dead
        (each counts one attempt) or released (put back untried, e.g. while a circuit
        is open). ``record_outcomes`` records many in one transaction (one writer
        trip: the worker batches them); ``record_outcome``, ``mark_delivered``,
        ``schedule_retry``, ``mark_dead`` and ``release`` are shorthands for it
        (``OutcomeShorthands``).
        ``replay`` makes the matching deliveries that are not pending (dead or
        delivered) pending again, due ``now``, with their attempt count reset; it
        returns how many it changed. The event and its id stay the same.
    Polling
        ``claim_pollable`` leases jobs whose ``next_poll_at`` has come;
        ``set_next_poll`` reschedules (None stops polling).
    Wake-ups
        ``wait_for_work(timeout_s)`` returns as soon as new deliveries or due polls
        may exist (committed by this process, or by any process where the backend
        can tell), or after ``timeout_s``.
    Observation
        attempts, shared sink health, the stream's feed, statistics and retention:
        see ``ObservableStore``.
    """

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""
        ...

    async def ping(self) -> None:
        """Raise if the store cannot answer a trivial query."""
        ...

    async def close(self) -> None: ...

    # jobs
    async def create_job(
        self, job: Job, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> tuple[Job, bool]: ...

    async def mark_submitted(
        self,
        job_id: str,
        *,
        provider_task_id: str,
        submitted_at: datetime,
        next_poll_at: datetime | None,
        deadline_at: datetime | None,
    ) -> Job: ...

    async def delete_job(self, job_id: str) -> None: ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def find_job_by_task(self, provider: str, provider_task_id: str) -> Job | None: ...

    async def list_jobs(
        self,
        *,
        ref: str | None = None,
        status: JobStatus | None = None,
        provider: str | None = None,
        limit: int = 100,
    ) -> list[Job]: ...

    async def count_jobs(self, provider: str, statuses: Collection[JobStatus]) -> int: ...

    # events
    async def ingest(self, record: Ingest) -> bool: ...

    async def ingest_for(
        self, lookup: JobLookup, plan: Callable[[Job | None], Ingest | None]
    ) -> tuple[Job | None, Ingest | None, bool]:
        """A callback's whole store work in one trip: find the job ``lookup`` names, call
        ``plan(job)`` and ``ingest`` the record it returns, if any. ``plan`` runs inside
        the store's operation (SQLite: on its writer thread), so it must be quick and
        pure; its exception aborts with nothing written. Returns (job, record, inserted)."""
        ...

    async def list_events(self, job_id: str) -> list[Event]: ...

    async def get_event(self, event_id: str) -> Event | None: ...

    # deliveries
    async def claim_due(
        self,
        now: datetime,
        *,
        limit: int,
        lease_s: float,
        owner: str,
        exclude_sinks: Collection[str] = (),
    ) -> list[DueDelivery]: ...

    async def record_outcome(self, outcome: DeliveryOutcome) -> None: ...

    async def record_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None: ...

    async def mark_delivered(
        self, delivery_id: str, *, status: int | None, now: datetime
    ) -> None: ...

    async def schedule_retry(
        self,
        delivery_id: str,
        *,
        next_attempt_at: datetime,
        status: int | None,
        error: str,
        now: datetime,
    ) -> None: ...

    async def mark_dead(
        self, delivery_id: str, *, status: int | None, error: str, now: datetime
    ) -> None: ...

    async def release(self, delivery_id: str, *, next_attempt_at: datetime) -> None: ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def list_deliveries(
        self, where: DeliveryFilter, *, limit: int = 100
    ) -> list[Delivery]: ...

    async def replay(self, where: DeliveryFilter, now: datetime) -> int: ...

    async def next_due_at(self) -> datetime | None: ...

    async def backlog_by_sink(self) -> dict[str, int]: ...

    # polling
    async def claim_pollable(self, now: datetime, *, limit: int, lease_s: float) -> list[Job]: ...

    async def set_next_poll(self, job_id: str, next_poll_at: datetime | None) -> None: ...

    # wake-ups
    async def wait_for_work(self, timeout_s: float) -> None: ...


class OutcomeShorthands:
    """``record_outcome`` / ``mark_delivered`` / ``schedule_retry`` / ``mark_dead`` /
    ``release``, written once for every store on top of its ``record_outcomes``."""

    async def record_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        raise NotImplementedError

    async def record_outcome(self, outcome: DeliveryOutcome) -> None:
        await self.record_outcomes([outcome])

    async def mark_delivered(self, delivery_id: str, *, status: int | None, now: datetime) -> None:
        await self.record_outcome(DeliveryOutcome(delivery_id, Decision.delivered(status), now))

    async def schedule_retry(
        self,
        delivery_id: str,
        *,
        next_attempt_at: datetime,
        status: int | None,
        error: str,
        now: datetime,
    ) -> None:
        decision = Decision.retry(next_attempt_at, status, error)
        await self.record_outcome(DeliveryOutcome(delivery_id, decision, now))

    async def mark_dead(
        self, delivery_id: str, *, status: int | None, error: str, now: datetime
    ) -> None:
        await self.record_outcome(DeliveryOutcome(delivery_id, Decision.dead(status, error), now))

    async def release(self, delivery_id: str, *, next_attempt_at: datetime) -> None:
        decision = Decision.released(next_attempt_at)
        await self.record_outcome(DeliveryOutcome(delivery_id, decision, next_attempt_at))
