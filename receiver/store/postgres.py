"""``PostgresStore``: the ``Store`` for scale-out, on asyncpg (extra ``postgres``).

Several web processes and workers share one database safely:

- idempotency and event dedupe rest on unique constraints (``INSERT … ON CONFLICT
  DO NOTHING``), so a duplicate callback hitting two processes at once makes one event;
- ``claim_due`` / ``claim_pollable`` lock rows ``FOR UPDATE SKIP LOCKED`` and write a
  lease, so claimers never share a row and a dead worker's lease simply expires;
- replay, release and poll changes ``NOTIFY relay_work`` inside their transaction
  (payload: the schema), ingest right after its commit, coalesced (``_announce``), and
  ``wait_for_work`` listens on a dedicated connection, so every process wakes when any
  process commits work;
- ``schema=`` isolates a deployment (or a test run): every pooled connection gets it
  as ``search_path`` and ``migrate`` creates it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
import structlog

from receiver.errors import IdempotencyMismatch, NotFound
from receiver.events import (
    Delivery,
    DueDelivery,
    Event,
    Job,
    JobStatus,
    new_id,
)
from receiver.store import postgres_observe, postgres_schema
from receiver.store.base import (
    DeliveryFilter,
    DeliveryOutcome,
    Ingest,
    JobLookup,
    OutcomeShorthands,
)
from receiver.store.postgres_observe import PostgresObservations
from receiver.store.rows import (
    DELIVERY_VIEW_COLUMNS,
    JOB_COLUMNS,
    TERMINAL,
    delivery_from_row,
    filter_clause,
    job_from_row,
    job_values,
    statuses_behind,
)
from receiver.store.wakeup import WorkSignal

log = structlog.get_logger("relay.store")

CHANNEL = "relay_work"
#: the least time between two coalesced ingest NOTIFYs of one process (see ``_announce``)
NOTIFY_SPACING_S = 0.005
Record = asyncpg.Record
Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[Record]"


# Insert the event; only if that inserted a row: its deliveries, the job moved forward
# (status only from a lower rank; provider_task_id only if unset; a terminal status
# ends polling), its entry in the stream's feed and a NOTIFY. PostgreSQL runs every
# data-modifying CTE exactly once.
_INGEST = """
WITH event AS (
    INSERT INTO events (id, job_id, provider, provider_task_id, type, body, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT DO NOTHING
    RETURNING id
), deliveries AS (
    INSERT INTO deliveries
        (id, event_id, job_id, sink, state, next_attempt_at, created_at, updated_at)
    SELECT d.id, event.id, $2, d.sink, 'pending', $7, $7, $7
    FROM event, unnest($8::text[], $9::text[]) AS d (id, sink)
    ON CONFLICT DO NOTHING
), job AS (
    UPDATE jobs SET
        provider_task_id = COALESCE(provider_task_id, $10),
        status = CASE WHEN status = ANY($12::text[]) THEN $11 ELSE status END,
        finished_at = CASE WHEN status = ANY($12::text[])
            THEN COALESCE($13, finished_at) ELSE finished_at END,
        next_poll_at = CASE WHEN status = ANY($12::text[]) AND $14
            THEN NULL ELSE next_poll_at END,
        poll_lease_until = CASE WHEN status = ANY($12::text[]) AND $14
            THEN NULL ELSE poll_lease_until END
    WHERE id = $2 AND EXISTS (SELECT 1 FROM event)
), feed AS (
    INSERT INTO feed (type, job_id, ref, provider, event_id, created_at)
    SELECT $5, $2, $15, $3, event.id, $7 FROM event
)
SELECT count(*) FROM event
"""

# One attempt's outcome ($1: it counts as an attempt) or a release (only the due time
# and the lease change); a delivery pending again ($10) wakes every process's worker.
# The attempt's row, its feed entry and its sink-health change ride in the same
# statement (``postgres_observe.OUTCOME_CTES``).
_OUTCOME = (
    """
WITH changed AS (
    UPDATE deliveries SET
        state = CASE WHEN $1 THEN $2 ELSE state END,
        attempts = attempts + CASE WHEN $1 THEN 1 ELSE 0 END,
        next_attempt_at = $3,
        last_status = CASE WHEN $1 THEN $4 ELSE last_status END,
        last_error = CASE WHEN $1 THEN $5 ELSE last_error END,
        updated_at = CASE WHEN $1 THEN $6 ELSE updated_at END,
        lease_owner = NULL, lease_until = NULL
    WHERE id = $7 AND state = 'pending'
    RETURNING 1
), work_wake AS (
    SELECT pg_notify($8, $9) FROM changed WHERE $10
), """
    + postgres_observe.OUTCOME_CTES
    + """
SELECT (SELECT count(*) FROM changed) + 0 * (SELECT count(*) FROM work_wake)
"""
)


#: ``MIN(GREATEST(next_attempt_at, lease_until))`` over pending deliveries without reading
#: them all (the plain aggregate reads every pending row, every idle wait of every worker
#: while a paused sink holds a backlog): walking ``deliveries_due``, the first row not
#: leased past its due time bounds the answer, and only rows still leased before it can
#: end sooner (a range the index answers: ``infinity`` when no row bounds it, where an
#: ``IS NULL OR`` made it a sequential scan). ``LEAST`` skips NULLs. SQLite's
#: ``_next_due_us`` takes the same two walks. At 50,000 pending: 3.6 -> 0.12-0.17 ms.
NEXT_DUE_SQL = (
    "WITH bound AS ("
    "  SELECT next_attempt_at AS at FROM deliveries"
    "  WHERE state = 'pending' AND (lease_until IS NULL OR lease_until <= next_attempt_at)"
    "  ORDER BY next_attempt_at LIMIT 1"
    ") SELECT LEAST((SELECT at FROM bound), ("
    "  SELECT MIN(lease_until) FROM deliveries"
    "  WHERE state = 'pending' AND lease_until > next_attempt_at"
    "    AND next_attempt_at < COALESCE((SELECT at FROM bound), 'infinity')"
    "))"
)


@dataclass(slots=True)
class _Transaction:
    connection: Connection
    wake: bool = False  # NOTIFY on commit


def _job(row: Record) -> Job:
    return job_from_row(row, _same)


async def _get_job(connection: Connection, job_id: str) -> Job | None:
    row = await connection.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
    return None if row is None else _job(row)


async def _find_job_by_task(connection: Connection, provider: str, task_id: str) -> Job | None:
    row = await connection.fetchrow(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE provider = $1 AND provider_task_id = $2"
        " ORDER BY created_at, id LIMIT 1",
        provider,
        task_id,
    )
    return None if row is None else _job(row)


async def _look_up(connection: Connection, lookup: JobLookup) -> Job | None:
    """The job ``lookup`` names (see ``JobLookup``)."""
    if lookup.job_id is not None:
        return await _get_job(connection, lookup.job_id)
    job = await _find_job_by_task(connection, lookup.provider, lookup.task_id)
    if job is None and lookup.correlation_id is not None:
        candidate = await _get_job(connection, lookup.correlation_id)
        if candidate is not None and candidate.provider == lookup.provider:
            job = candidate
    return job


def _delivery(row: Record) -> Delivery:
    return delivery_from_row(row, _same)


def _same(moment: datetime | None) -> datetime | None:
    """asyncpg already decodes timestamptz to aware UTC datetimes."""
    return moment


def _rowcount(status: str) -> int:
    """The row count at the end of a command tag such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _where(where: DeliveryFilter, first: int) -> tuple[str, list[Any]]:
    """A WHERE clause for ``where`` whose placeholders start at ``$first``."""
    return filter_clause(where, lambda n: f"${first + n - 1}")


async def _keep_session(connection: asyncpg.Connection[Record]) -> None:
    """The pool's reset on release, instead of asyncpg's ``RESET ALL; UNLISTEN *; …``
    (a round trip per checkout; without it 3,070 → 4,130 ingests/s at 8 concurrent,
    bench/store_ingest.py). asyncpg still
    rolls back an unfinished transaction first; beyond that the relay's pooled
    connections hold no session state: no LISTEN (the listener is a connection of its
    own), no cursor outside a transaction, no ``SET`` but ``migrate``'s ``search_path`` to
    the schema they start with, and ``migrate`` releases its advisory lock itself."""


class PostgresStore(PostgresObservations, OutcomeShorthands):
    """The ``Store`` on PostgreSQL; see the module docstring."""

    def __init__(
        self, dsn: str, *, schema: str = "public", min_size: int = 1, max_size: int = 10
    ) -> None:
        self.schema = postgres_schema.checked_schema(schema)
        self._dsn = dsn
        self._pool_size = (min_size, max_size)
        self._pool: asyncpg.Pool[Record] | None = None
        self._pool_lock = asyncio.Lock()
        self._listener: asyncpg.Connection[Record] | None = None
        self._listen_lock = asyncio.Lock()
        self._signal = WorkSignal()
        self._closed = False
        self._announcer: asyncio.Task[None] | None = None
        self._announce_again = False

    async def _db(self) -> asyncpg.Pool[Record]:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=self._pool_size[0],
                        max_size=self._pool_size[1],
                        server_settings={"search_path": self.schema},
                        reset=_keep_session,
                    )
        return self._pool

    async def migrate(self) -> int:
        async with (await self._db()).acquire() as connection:
            return await postgres_schema.migrate(connection, self.schema)

    async def ping(self) -> None:
        await (await self._db()).fetchval("SELECT 1")

    async def close(self) -> None:
        announcer = self._announcer
        if announcer is not None and not announcer.done():
            await asyncio.wait([announcer], timeout=1)  # the last commits' NOTIFY goes out
        self._closed = True
        await self._close_observations()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Transaction]:
        """A transaction on a pooled connection. Set ``wake`` on it and its commit tells
        every process (NOTIFY) that work may exist, then wakes this one's waiters."""
        async with (await self._db()).acquire() as connection:
            transaction = _Transaction(connection)
            async with connection.transaction():
                yield transaction
                if transaction.wake:
                    await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, self.schema)
        if transaction.wake:
            self._signal.notify()

    # -- jobs --------------------------------------------------------------------------

    async def create_job(
        self, job: Job, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> tuple[Job, bool]:
        async with self._transaction() as tx:
            c = tx.connection
            if idempotency_key is not None:
                claimed = await c.fetchval(
                    "INSERT INTO idempotency_keys (key, request_hash, job_id, created_at)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING RETURNING key",
                    idempotency_key,
                    request_hash,
                    job.id,
                    job.created_at,
                )
                if claimed is None:  # committed by another request (we waited for it)
                    row = await c.fetchrow(
                        "SELECT k.request_hash, jobs.* FROM idempotency_keys AS k"
                        " JOIN jobs ON jobs.id = k.job_id WHERE k.key = $1",
                        idempotency_key,
                    )
                    if row is None:
                        raise NotFound("the job of this Idempotency-Key was just deleted")
                    if row["request_hash"] != request_hash:
                        raise IdempotencyMismatch(
                            "this Idempotency-Key was used with another request body"
                        )
                    return _job(row), False
            await c.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15)",
                *job_values(job, _same),
            )
            tx.wake = job.next_poll_at is not None
        return job, True

    async def mark_submitted(
        self,
        job_id: str,
        *,
        provider_task_id: str,
        submitted_at: datetime,
        next_poll_at: datetime | None,
        deadline_at: datetime | None,
    ) -> Job:
        async with self._transaction() as tx:
            row = await tx.connection.fetchrow(
                "UPDATE jobs SET provider_task_id = $1, submitted_at = $2, deadline_at = $3,"
                " status = CASE WHEN status = 'queued' THEN 'submitted' ELSE status END,"
                " next_poll_at = CASE WHEN status = ANY($4::text[]) THEN NULL"
                " ELSE $5::timestamptz END,"
                f" poll_lease_until = NULL WHERE id = $6 RETURNING {JOB_COLUMNS}",
                provider_task_id,
                submitted_at,
                deadline_at,
                TERMINAL,
                next_poll_at,
                job_id,
            )
            if row is None:
                raise NotFound(f"job {job_id} does not exist", job_id=job_id)
            job = _job(row)
            tx.wake = job.next_poll_at is not None
        return job

    async def delete_job(self, job_id: str) -> None:
        async with (await self._db()).acquire() as c, c.transaction():
            await c.execute("DELETE FROM idempotency_keys WHERE job_id = $1", job_id)
            await c.execute("DELETE FROM jobs WHERE id = $1", job_id)

    async def get_job(self, job_id: str) -> Job | None:
        async with (await self._db()).acquire() as connection:
            return await _get_job(connection, job_id)

    async def find_job_by_task(self, provider: str, provider_task_id: str) -> Job | None:
        """The earliest job bound to that provider task (useapi may bind two)."""
        async with (await self._db()).acquire() as connection:
            return await _find_job_by_task(connection, provider, provider_task_id)

    async def list_jobs(
        self,
        *,
        ref: str | None = None,
        status: JobStatus | None = None,
        provider: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        rows = await (await self._db()).fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs"
            " WHERE ($1::text IS NULL OR ref = $1) AND ($2::text IS NULL OR status = $2)"
            " AND ($3::text IS NULL OR provider = $3)"
            " ORDER BY created_at DESC, id DESC LIMIT $4",
            ref,
            status.value if status is not None else None,
            provider,
            limit,
        )
        return [_job(row) for row in rows]

    async def count_jobs(self, provider: str, statuses: Collection[JobStatus]) -> int:
        count = await (await self._db()).fetchval(
            "SELECT COUNT(*) FROM jobs WHERE provider = $1 AND status = ANY($2::text[])",
            provider,
            [status.value for status in statuses],
        )
        return int(count)

    # -- events ------------------------------------------------------------------------

    async def ingest(self, record: Ingest) -> bool:
        """One statement, so one round trip and one implicit transaction (see ``_INGEST``)."""
        async with (await self._db()).acquire() as connection:
            return await self._insert(connection, record)

    async def ingest_for(
        self, lookup: JobLookup, plan: Callable[[Job | None], Ingest | None]
    ) -> tuple[Job | None, Ingest | None, bool]:
        """Lookup, ``plan`` and insert on one pooled connection: one pool trip."""
        async with (await self._db()).acquire() as connection:
            job = await _look_up(connection, lookup)
            record = plan(job)
            inserted = record is not None and await self._insert(connection, record)
        return job, record, inserted

    async def _insert(self, connection: Connection, record: Ingest) -> bool:
        event = record.event
        sinks = list(dict.fromkeys(record.sinks))
        status = record.job_status
        wake = bool(sinks) or status is not None
        inserted = await connection.fetchval(
            _INGEST,
            event.id,
            record.job_id,
            event.data["provider"],
            event.data["provider_task_id"],
            event.type.value,
            event.to_json(),
            record.now,
            # random, unlike SQLite's (``new_ordered_id``): ids made at the insert itself
            # are always the newest, and concurrent inserters would all queue on the
            # index's rightmost leaf page (store_ingest at 8 concurrent: 5-18 % lower)
            [new_id("dlv") for _ in sinks],
            sinks,
            record.provider_task_id,
            status.value if status is not None else None,
            statuses_behind(status) if status is not None else [],
            record.finished_at,
            status is not None and status.terminal,
            event.data["ref"],
        )
        if inserted:
            self._feed_appended()
        if inserted and wake:
            self._signal.notify()
            self._announce()
        return bool(inserted)

    def _announce(self) -> None:
        """NOTIFY the other processes that work exists, soon after the commit and
        coalesced: at most one NOTIFY in flight, the next ``NOTIFY_SPACING_S`` after it,
        covering every commit before it is sent. A NOTIFY inside each ingest transaction
        serialises their commits (PostgreSQL takes one global lock on its notification
        queue at commit): measured 2,370 → 3,070 ingests/s at 8 concurrent,
        bench/store_ingest.py. A wake-up lost to a crash meanwhile only delays the
        others' workers to their next look (``wait_for_work``'s timeout)."""
        self._announce_again = True
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.get_running_loop().create_task(self._notify_others())

    async def _notify_others(self) -> None:
        while self._announce_again and not self._closed:
            self._announce_again = False  # what commits from here on needs another NOTIFY
            try:
                await (await self._db()).execute("SELECT pg_notify($1, $2)", CHANNEL, self.schema)
            except (OSError, asyncpg.PostgresError, RuntimeError) as exc:
                log.warning("store.notify_failed", error=type(exc).__name__)
                return
            await asyncio.sleep(NOTIFY_SPACING_S)

    async def list_events(self, job_id: str) -> list[Event]:
        rows = await (await self._db()).fetch(
            "SELECT body FROM events WHERE job_id = $1 ORDER BY seq", job_id
        )
        return [Event.from_json(row["body"]) for row in rows]

    async def get_event(self, event_id: str) -> Event | None:
        body = await (await self._db()).fetchval("SELECT body FROM events WHERE id = $1", event_id)
        return None if body is None else Event.from_json(body)

    # -- deliveries --------------------------------------------------------------------

    async def claim_due(
        self,
        now: datetime,
        *,
        limit: int,
        lease_s: float,
        owner: str,
        exclude_sinks: Collection[str] = (),
    ) -> list[DueDelivery]:
        rows = await (await self._db()).fetch(
            "WITH due AS ("
            "  SELECT id FROM deliveries"
            "  WHERE state = 'pending' AND next_attempt_at <= $1"
            "    AND (lease_until IS NULL OR lease_until <= $1) AND sink <> ALL($2::text[])"
            "  ORDER BY next_attempt_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED)"
            " UPDATE deliveries AS d SET lease_owner = $4, lease_until = $5"
            " FROM due, events AS e WHERE d.id = due.id AND e.id = d.event_id"
            " RETURNING d.*, e.body, e.type AS event_type",
            now,
            list(exclude_sinks),
            limit,
            owner,
            now + timedelta(seconds=lease_s),
        )
        ordered = sorted(rows, key=lambda row: (row["next_attempt_at"], row["seq"]))
        return [DueDelivery(_delivery(row), Event.from_json(row["body"])) for row in ordered]

    async def record_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """All of ``outcomes`` in one transaction (one pipelined ``executemany``, one
        commit) with what each holds (its attempt, feed entry and sink health change:
        ``postgres_observe.OUTCOME_CTES``); a delivery put back in the queue also
        NOTIFYs (see ``_OUTCOME``), a feed entry wakes the stream once per batch."""
        rows = [
            (
                outcome.decision.counts_attempt,
                outcome.decision.state.value,
                outcome.decision.at,
                outcome.decision.status,
                outcome.decision.error,
                outcome.now,
                outcome.delivery_id,
                CHANNEL,
                self.schema,
                outcome.decision.requeued,
                *postgres_observe.outcome_params(outcome),
            )
            for outcome in outcomes
        ]
        async with self._transaction() as tx:
            await tx.connection.executemany(_OUTCOME, rows)
        if any(outcome.feed is not None for outcome in outcomes):
            self._feed_appended()
        if any(outcome.decision.requeued for outcome in outcomes):
            self._signal.notify()

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        row = await (await self._db()).fetchrow(
            f"SELECT {DELIVERY_VIEW_COLUMNS} FROM deliveries WHERE id = $1", delivery_id
        )
        return None if row is None else _delivery(row)

    async def list_deliveries(self, where: DeliveryFilter, *, limit: int = 100) -> list[Delivery]:
        clause, params = _where(where, 2)
        rows = await (await self._db()).fetch(
            f"SELECT {DELIVERY_VIEW_COLUMNS} FROM deliveries WHERE {clause}"
            " ORDER BY seq DESC LIMIT $1",
            limit,
            *params,
        )
        return [_delivery(row) for row in rows]

    async def replay(self, where: DeliveryFilter, now: datetime) -> int:
        clause, params = _where(where, 2)
        async with self._transaction() as tx:
            changed = _rowcount(
                await tx.connection.execute(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1,"
                    " updated_at = $1, lease_owner = NULL, lease_until = NULL"
                    f" WHERE state <> 'pending' AND {clause}",
                    now,
                    *params,
                )
            )
            tx.wake = changed > 0
        return changed

    async def next_due_at(self) -> datetime | None:
        """The earliest moment a pending delivery may be claimed (a lease defers it)."""
        moment: datetime | None = await (await self._db()).fetchval(NEXT_DUE_SQL)
        return moment

    async def backlog_by_sink(self) -> dict[str, int]:
        rows = await (await self._db()).fetch(
            "SELECT sink, COUNT(*) AS n FROM deliveries WHERE state = 'pending' GROUP BY sink"
        )
        return {row["sink"]: int(row["n"]) for row in rows}

    # -- polling -----------------------------------------------------------------------

    async def claim_pollable(self, now: datetime, *, limit: int, lease_s: float) -> list[Job]:
        rows = await (await self._db()).fetch(
            "WITH due AS ("
            "  SELECT id FROM jobs WHERE next_poll_at <= $1"
            "    AND (poll_lease_until IS NULL OR poll_lease_until <= $1)"
            "    AND status <> ALL($2::text[])"
            "  ORDER BY next_poll_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)"
            " UPDATE jobs SET poll_lease_until = $4 FROM due WHERE jobs.id = due.id"
            " RETURNING jobs.*",
            now,
            TERMINAL,
            limit,
            now + timedelta(seconds=lease_s),
        )
        return sorted((_job(row) for row in rows), key=lambda job: (job.next_poll_at, job.id))

    async def set_next_poll(self, job_id: str, next_poll_at: datetime | None) -> None:
        async with self._transaction() as tx:
            await tx.connection.execute(
                "UPDATE jobs SET poll_lease_until = NULL, next_poll_at ="
                " CASE WHEN status = ANY($1::text[]) THEN NULL ELSE $2::timestamptz END"
                " WHERE id = $3",
                TERMINAL,
                next_poll_at,
                job_id,
            )
            tx.wake = next_poll_at is not None

    # -- wake-ups ----------------------------------------------------------------------

    async def wait_for_work(self, timeout_s: float) -> None:
        """Wait for a NOTIFY from any process (or this one's commits), up to ``timeout_s``.

        The listening connection opens on first use and reopens if lost; while it is
        down, this falls back to the timeout.
        """
        self._signal.arm()  # a commit while the listener connects still counts
        if not self._closed and (self._listener is None or self._listener.is_closed()):
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                await self._listen()
        await self._signal.wait(timeout_s)

    async def _listen(self) -> None:
        async with self._listen_lock:  # the worker and the poller may both get here
            if self._listener is not None and not self._listener.is_closed():
                return
            listener = await asyncpg.connect(self._dsn, timeout=5)
            await listener.add_listener(CHANNEL, self._on_notification)
            self._listener = listener

    def _on_notification(self, connection: object, pid: int, channel: str, payload: object) -> None:
        if payload == self.schema:
            self._signal.notify()
