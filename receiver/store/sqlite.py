"""``SqliteStore``: the default ``Store``, one SQLite file in WAL mode (stdlib only).

Every operation runs on one writer thread (``GroupCommitter``) that commits
concurrent operations together: many callbacks arriving at once share one fsync
(``synchronous=FULL``), and each still gets its own result or exception.
``busy_timeout`` lets several processes (a web process and ``relay worker``) share
the file; their writes serialise on SQLite's lock.

``wait_for_work`` hears about work committed by this process at once, and about
another process's commits (a web's new events, for a separate ``relay worker``) within
``WATCH_S``: while something waits, the store reads ``PRAGMA data_version``, which
changes with every commit made by another connection. (PostgreSQL's LISTEN/NOTIFY
reaches every process at once.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from receiver.errors import ConfigError, IdempotencyMismatch, NotFound
from receiver.events import Delivery, DueDelivery, Event, Job, JobStatus, new_ordered_id
from receiver.feed import event_entry
from receiver.store import sqlite_observe, sqlite_schema
from receiver.store.base import (
    DeliveryFilter,
    DeliveryOutcome,
    Ingest,
    JobLookup,
    OutcomeShorthands,
)
from receiver.store.group_commit import CommitStats, Committer, GroupCommitter, InlineCommitter
from receiver.store.rows import (
    DELIVERY_COLUMNS,
    DELIVERY_VIEW_COLUMNS,
    JOB_COLUMNS,
    TERMINAL,
    delivery_from_row,
    filter_clause,
    job_from_row,
    job_values,
    statuses_behind,
)
from receiver.store.sqlite_observe import SqliteObservations
from receiver.store.wakeup import WorkSignal

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WATCH_S = 0.02  # how often a waiting store looks for other processes' commits
_MICROSECOND = timedelta(microseconds=1)


def _us(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is a bug and raises TypeError."""
    return (moment - _EPOCH) // _MICROSECOND


def _us_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else _us(moment)


def _at(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + us * _MICROSECOND


def _job(row: sqlite3.Row) -> Job:
    return job_from_row(row, _at)


def _delivery(row: sqlite3.Row) -> Delivery:
    return delivery_from_row(row, _at)


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def _where(where: DeliveryFilter) -> tuple[str, list[Any]]:
    return filter_clause(where, lambda _: "?")


_ATTEMPTED = (
    "UPDATE deliveries SET state = ?, attempts = attempts + 1, next_attempt_at = ?,"
    " last_status = ?, last_error = ?, updated_at = ?,"
    " lease_owner = NULL, lease_until = NULL WHERE id = ? AND state = 'pending'"
)
_RELEASED = (
    "UPDATE deliveries SET next_attempt_at = ?, lease_owner = NULL,"
    " lease_until = NULL WHERE id = ? AND state = 'pending'"
)


def _outcome_statement(outcome: DeliveryOutcome) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE that records ``outcome`` (only while the delivery is pending)."""
    decision = outcome.decision
    if not decision.counts_attempt:  # released: back in the queue untried
        return _RELEASED, (_us_or_none(decision.at), outcome.delivery_id)
    return _ATTEMPTED, (
        decision.state.value,
        _us_or_none(decision.at),
        decision.status,
        decision.error,
        _us(outcome.now),
        outcome.delivery_id,
    )


class SqliteStore(SqliteObservations, OutcomeShorthands):
    """The ``Store`` on one SQLite file; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        max_batch: int = 256,
        inline: bool = False,
    ) -> None:
        """``inline``: run statements on the event loop's thread (``InlineCommitter``,
        what ``open_store`` gives every process), not on a writer thread (usable from
        several loops: tests that share one store between threads)."""
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        committer = InlineCommitter if inline else GroupCommitter
        self._writer: Committer = committer(self._connect, max_batch=max_batch)
        self._signal = WorkSignal()
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, database_url: str, *, inline: bool = False) -> SqliteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        path = database_url[len(prefix) :] if database_url.startswith(prefix) else ""
        if not path or path == ":memory:":
            raise ConfigError(
                [f"DATABASE_URL must be sqlite:///<file> or postgresql://…, not {database_url!r}"]
            )
        return cls(path, inline=inline)

    @property
    def commit_stats(self) -> CommitStats:
        """How many operations shared how many commits (for benchmarks)."""
        return self._writer.stats

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        _enable_wal(connection, self._busy_timeout_ms / 1000)
        connection.execute("PRAGMA synchronous = FULL")
        # 32 MiB of page cache (the default is 2): every insert lands at a random spot of
        # the id indexes, and with 2 MiB a few thousand events already miss it on most
        # statements (measured: +15-18 % callbacks/s in-process, bench/ingest.py)
        connection.execute("PRAGMA cache_size = -32768")
        # each operation runs in a SAVEPOINT, whose journal (a copy of every page it
        # changes) SQLite spills to a temporary file past 64 KiB, one pwrite per page: a
        # batch of 64 outcomes did, and it was 9 % of ``relay worker``'s CPU. In memory.
        connection.execute("PRAGMA temp_store = MEMORY")
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    async def migrate(self) -> int:
        return await self._writer.submit(sqlite_schema.migrate)

    async def ping(self) -> None:
        await self._writer.submit(_ping, write=False)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._writer.close()

    # -- jobs --------------------------------------------------------------------------

    async def create_job(
        self, job: Job, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> tuple[Job, bool]:
        def run(c: sqlite3.Connection) -> tuple[Job, bool]:
            if idempotency_key is not None:
                row = c.execute(
                    "SELECT request_hash, job_id FROM idempotency_keys WHERE key = ?",
                    (idempotency_key,),
                ).fetchone()
                if row is not None:
                    if row["request_hash"] != request_hash:
                        raise IdempotencyMismatch(
                            "this Idempotency-Key was used with another request body"
                        )
                    existing = _get_job(c, row["job_id"])
                    if existing is not None:
                        return existing, False
            c.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({_placeholders(15)})",
                job_values(job, _us_or_none),
            )
            if idempotency_key is not None:
                c.execute(
                    "INSERT INTO idempotency_keys (key, request_hash, job_id, created_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE"
                    " SET request_hash = excluded.request_hash, job_id = excluded.job_id",
                    (idempotency_key, request_hash, job.id, _us(job.created_at)),
                )
            return job, True

        result = await self._writer.submit(run)
        if result[1] and job.next_poll_at is not None:
            self._signal.notify()
        return result

    async def mark_submitted(
        self,
        job_id: str,
        *,
        provider_task_id: str,
        submitted_at: datetime,
        next_poll_at: datetime | None,
        deadline_at: datetime | None,
    ) -> Job:
        def run(c: sqlite3.Connection) -> Job | None:
            row = c.execute(
                "UPDATE jobs SET provider_task_id = ?, submitted_at = ?, deadline_at = ?,"
                " status = CASE WHEN status = ? THEN ? ELSE status END,"
                f" next_poll_at = CASE WHEN status IN ({_placeholders(len(TERMINAL))})"
                " THEN NULL ELSE ? END, poll_lease_until = NULL"
                f" WHERE id = ? RETURNING {JOB_COLUMNS}",
                (
                    provider_task_id,
                    _us(submitted_at),
                    _us_or_none(deadline_at),
                    JobStatus.QUEUED.value,
                    JobStatus.SUBMITTED.value,
                    *TERMINAL,
                    _us_or_none(next_poll_at),
                    job_id,
                ),
            ).fetchone()
            return None if row is None else _job(row)

        job = await self._writer.submit(run)
        if job is None:
            raise NotFound(f"job {job_id} does not exist", job_id=job_id)
        if job.next_poll_at is not None:
            self._signal.notify()
        return job

    async def delete_job(self, job_id: str) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM idempotency_keys WHERE job_id = ?", (job_id,))
            c.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

        await self._writer.submit(run)

    async def get_job(self, job_id: str) -> Job | None:
        return await self._writer.submit(lambda c: _get_job(c, job_id), write=False)

    async def find_job_by_task(self, provider: str, provider_task_id: str) -> Job | None:
        """The earliest job bound to that provider task (useapi may bind two)."""
        return await self._writer.submit(
            lambda c: _find_job_by_task(c, provider, provider_task_id), write=False
        )

    async def list_jobs(
        self,
        *,
        ref: str | None = None,
        status: JobStatus | None = None,
        provider: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("ref", ref),
            ("status", status.value if status is not None else None),
            ("provider", provider),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(clauses) or '1 = 1'}"
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"

        def run(c: sqlite3.Connection) -> list[Job]:
            return [_job(row) for row in c.execute(sql, (*params, limit))]

        return await self._writer.submit(run, write=False)

    async def count_jobs(self, provider: str, statuses: Collection[JobStatus]) -> int:
        values = [status.value for status in statuses]
        if not values:
            return 0

        def run(c: sqlite3.Connection) -> int:
            row = c.execute(
                "SELECT COUNT(*) FROM jobs WHERE provider = ?"
                f" AND status IN ({_placeholders(len(values))})",
                (provider, *values),
            ).fetchone()
            return int(row[0])

        return await self._writer.submit(run, write=False)

    # -- events ------------------------------------------------------------------------

    async def ingest(self, record: Ingest) -> bool:
        # no savepoint: _insert's statements cannot fail alone (ON CONFLICT DO NOTHING)
        inserted = await self._writer.submit(lambda c: _insert(c, record), savepoint=False)
        self._notify_ingested(record, inserted)
        return inserted

    async def ingest_for(
        self, lookup: JobLookup, plan: Callable[[Job | None], Ingest | None]
    ) -> tuple[Job | None, Ingest | None, bool]:
        """Lookup, ``plan`` and insert in one writer operation (one trip, one commit)."""

        def run(c: sqlite3.Connection) -> tuple[Job | None, Ingest | None, bool]:
            job = _look_up(c, lookup)
            record = plan(job)
            return job, record, record is not None and _insert(c, record)

        # no savepoint: ``plan`` raises (401, 409 …) before the first write, if at all
        job, record, inserted = await self._writer.submit(run, savepoint=False)
        if record is not None:
            self._notify_ingested(record, inserted)
        return job, record, inserted

    def _notify_ingested(self, record: Ingest, inserted: bool) -> None:
        if inserted:
            self._feed_appended()
        if inserted and (record.sinks or record.job_status is not None):
            self._signal.notify()

    async def list_events(self, job_id: str) -> list[Event]:
        def run(c: sqlite3.Connection) -> list[Event]:
            rows = c.execute("SELECT body FROM events WHERE job_id = ? ORDER BY seq", (job_id,))
            return [Event.from_json(row["body"]) for row in rows]

        return await self._writer.submit(run, write=False)

    async def get_event(self, event_id: str) -> Event | None:
        def run(c: sqlite3.Connection) -> Event | None:
            row = c.execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()
            return None if row is None else Event.from_json(row["body"])

        return await self._writer.submit(run, write=False)

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
        at = _us(now)
        until = _us(now + timedelta(seconds=lease_s))
        excluded = list(exclude_sinks)

        def run(c: sqlite3.Connection) -> list[DueDelivery]:
            rows = c.execute(
                # INDEXED BY: left to itself the planner picks (state, sink) and sorts
                # every pending row per claim (4.7 ms for 64 of 20,000; 0.7 ms in order)
                "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE seq IN ("
                "  SELECT seq FROM deliveries INDEXED BY deliveries_due"
                "  WHERE state = 'pending' AND next_attempt_at <= ?"
                "    AND (lease_until IS NULL OR lease_until <= ?)"
                f"   AND sink NOT IN ({_placeholders(len(excluded))})"
                "  ORDER BY next_attempt_at, seq LIMIT ?"
                f") RETURNING {DELIVERY_COLUMNS}",
                (owner, until, at, at, *excluded, limit),
            ).fetchall()
            deliveries = sorted(
                (_delivery(row) for row in rows), key=lambda d: (d.next_attempt_at, d.created_at)
            )
            event_ids = list({d.event_id for d in deliveries})
            bodies = {
                row["id"]: row["body"]
                for row in c.execute(
                    f"SELECT id, body FROM events WHERE id IN ({_placeholders(len(event_ids))})",
                    event_ids,
                )
            }
            return [DueDelivery(d, Event.from_json(bodies[d.event_id])) for d in deliveries]

        # a claim lost to a power cut is claimed again: no fsync (see GroupCommitter)
        return await self._writer.submit(run, durable=False)

    async def record_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """All of ``outcomes`` in one writer operation (one queue item, one commit)."""
        statements = [_outcome_statement(outcome) for outcome in outcomes]

        def run(c: sqlite3.Connection) -> bool:
            fed = False
            for outcome, (sql, params) in zip(outcomes, statements, strict=True):
                applied = c.execute(sql, params).rowcount > 0
                if applied and outcome.attempt is not None:
                    sqlite_observe.record_attempt(c, outcome.delivery_id, outcome.attempt)
                if applied and outcome.feed is not None:
                    sqlite_observe.append_feed(c, [outcome.feed])
                    fed = True
                if outcome.health is not None:
                    sqlite_observe.apply_health(c, outcome.health)
            return fed

        # an outcome lost to a power cut means a re-delivery (same webhook-id): no fsync
        if await self._writer.submit(run, durable=False):
            self._feed_appended()
        if any(outcome.decision.requeued for outcome in outcomes):
            self._signal.notify()

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        def run(c: sqlite3.Connection) -> Delivery | None:
            row = c.execute(
                f"SELECT {DELIVERY_VIEW_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            return None if row is None else _delivery(row)

        return await self._writer.submit(run, write=False)

    async def list_deliveries(self, where: DeliveryFilter, *, limit: int = 100) -> list[Delivery]:
        clause, params = _where(where)

        def run(c: sqlite3.Connection) -> list[Delivery]:
            rows = c.execute(
                f"SELECT {DELIVERY_VIEW_COLUMNS} FROM deliveries WHERE {clause}"
                " ORDER BY seq DESC LIMIT ?",
                (*params, limit),
            )
            return [_delivery(row) for row in rows]

        return await self._writer.submit(run, write=False)

    async def replay(self, where: DeliveryFilter, now: datetime) -> int:
        clause, params = _where(where)
        at = _us(now)

        def run(c: sqlite3.Connection) -> int:
            return c.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                " updated_at = ?, lease_owner = NULL, lease_until = NULL"
                f" WHERE state != 'pending' AND {clause}",
                (at, at, *params),
            ).rowcount

        changed = await self._writer.submit(run)
        if changed:
            self._signal.notify()
        return changed

    async def next_due_at(self) -> datetime | None:
        """The earliest moment a pending delivery may be claimed (a lease defers it)."""

        def run(c: sqlite3.Connection) -> datetime | None:
            return _at(_next_due_us(c))

        return await self._writer.submit(run, write=False)

    async def backlog_by_sink(self) -> dict[str, int]:
        def run(c: sqlite3.Connection) -> dict[str, int]:
            rows = c.execute(
                "SELECT sink, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY sink"
            )
            return {row[0]: int(row[1]) for row in rows}

        return await self._writer.submit(run, write=False)

    # -- polling -----------------------------------------------------------------------

    async def claim_pollable(self, now: datetime, *, limit: int, lease_s: float) -> list[Job]:
        at = _us(now)
        until = _us(now + timedelta(seconds=lease_s))

        def run(c: sqlite3.Connection) -> list[Job]:
            rows = c.execute(
                "UPDATE jobs SET poll_lease_until = ? WHERE id IN ("
                "  SELECT id FROM jobs WHERE next_poll_at IS NOT NULL AND next_poll_at <= ?"
                "    AND (poll_lease_until IS NULL OR poll_lease_until <= ?)"
                f"   AND status NOT IN ({_placeholders(len(TERMINAL))})"
                "  ORDER BY next_poll_at, id LIMIT ?"
                f") RETURNING {JOB_COLUMNS}",
                (until, at, at, *TERMINAL, limit),
            ).fetchall()
            jobs = [_job(row) for row in rows]
            return sorted(jobs, key=lambda job: (job.next_poll_at, job.id))

        return await self._writer.submit(run)

    async def set_next_poll(self, job_id: str, next_poll_at: datetime | None) -> None:
        params = (*TERMINAL, _us_or_none(next_poll_at), job_id)

        def run(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE jobs SET poll_lease_until = NULL, next_poll_at = CASE"
                f" WHEN status IN ({_placeholders(len(TERMINAL))}) THEN NULL ELSE ? END"
                " WHERE id = ?",
                params,
            )

        await self._writer.submit(run)
        if next_poll_at is not None:
            self._signal.notify()

    # -- wake-ups ----------------------------------------------------------------------

    async def wait_for_work(self, timeout_s: float) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_other_processes())
        await self._signal.wait(timeout_s)

    async def _watch_other_processes(self) -> None:
        """Wake the waiters when another process commits (see the module docstring)."""
        seen: int | None = None
        while True:
            if self._signal.waiting:
                version: int | None
                try:
                    version = await self._writer.submit(_data_version, write=False)
                except Exception:  # the next look, or the waiter's own timeout, will do
                    version = seen
                if seen is not None and version != seen:
                    self._signal.notify()
                seen = version
            await asyncio.sleep(WATCH_S)


def _next_due_us(c: sqlite3.Connection) -> int | None:
    """``MIN(MAX(next_attempt_at, lease_until))`` over pending deliveries without reading
    them all (12 ms at 50,000 pending, every 0.25 s while a paused sink holds a backlog):
    walking the due index, the first row not leased past its due time gives the answer
    unless a lease before it ends sooner, and only rows still leased come before it."""
    first = c.execute(
        "SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_due"
        " WHERE state = 'pending' AND (lease_until IS NULL OR lease_until <= next_attempt_at)"
        " ORDER BY next_attempt_at LIMIT 1"
    ).fetchone()
    bound = first[0] if first is not None else None
    leased = c.execute(
        "SELECT MIN(lease_until) FROM deliveries INDEXED BY deliveries_due"
        " WHERE state = 'pending' AND lease_until > next_attempt_at"
        + ("" if bound is None else " AND next_attempt_at < ?"),
        () if bound is None else (bound,),
    ).fetchone()[0]
    candidates = [v for v in (bound, leased) if v is not None]
    return min(candidates) if candidates else None


def _data_version(c: sqlite3.Connection) -> int:
    return int(c.execute("PRAGMA data_version").fetchone()[0])


def _ping(c: sqlite3.Connection) -> None:
    c.execute("SELECT 1").fetchone()


def _get_job(c: sqlite3.Connection, job_id: str) -> Job | None:
    row = c.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job(row)


def _find_job_by_task(c: sqlite3.Connection, provider: str, task_id: str) -> Job | None:
    row = c.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE provider = ? AND provider_task_id = ?"
        " ORDER BY created_at, id LIMIT 1",
        (provider, task_id),
    ).fetchone()
    return None if row is None else _job(row)


def _look_up(c: sqlite3.Connection, lookup: JobLookup) -> Job | None:
    """The job ``lookup`` names (see ``JobLookup``)."""
    if lookup.job_id is not None:
        return _get_job(c, lookup.job_id)
    job = _find_job_by_task(c, lookup.provider, lookup.task_id)
    if job is None and lookup.correlation_id is not None:
        candidate = _get_job(c, lookup.correlation_id)
        if candidate is not None and candidate.provider == lookup.provider:
            job = candidate
    return job


def _insert(c: sqlite3.Connection, record: Ingest) -> bool:
    """``Ingest``'s writes; False (nothing written) when the event exists already."""
    event = record.event
    now = _us(record.now)
    inserted = c.execute(
        "INSERT INTO events"
        " (id, job_id, provider, provider_task_id, type, body, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            event.id,
            record.job_id,
            event.data["provider"],
            event.data["provider_task_id"],
            event.type.value,
            event.to_json(),
            now,
        ),
    ).rowcount
    if not inserted:
        return False
    sqlite_observe.append_feed(c, [event_entry(event, record.now)])
    c.executemany(
        "INSERT INTO deliveries (id, event_id, job_id, sink, state, next_attempt_at,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        [
            (new_ordered_id("dlv"), event.id, record.job_id, sink, now, now, now)
            for sink in dict.fromkeys(record.sinks)
        ],
    )
    if record.job_id is not None:
        _advance_job(c, record)
    return True


def _advance_job(c: sqlite3.Connection, record: Ingest) -> None:
    """Move the job forward per ``JobStatus.rank``; never back, never out of a terminal."""
    if record.provider_task_id is not None:
        c.execute(
            "UPDATE jobs SET provider_task_id = ? WHERE id = ? AND provider_task_id IS NULL",
            (record.provider_task_id, record.job_id),
        )
    status = record.job_status
    if status is None:
        return
    behind = statuses_behind(status)
    if not behind:
        return
    c.execute(
        "UPDATE jobs SET status = ?, finished_at = COALESCE(?, finished_at),"
        " next_poll_at = CASE WHEN ? THEN NULL ELSE next_poll_at END,"
        " poll_lease_until = CASE WHEN ? THEN NULL ELSE poll_lease_until END"
        f" WHERE id = ? AND status IN ({_placeholders(len(behind))})",
        (
            status.value,
            _us_or_none(record.finished_at),
            status.terminal,
            status.terminal,
            record.job_id,
            *behind,
        ),
    )


def _enable_wal(connection: sqlite3.Connection, timeout_s: float) -> None:
    """Switch to WAL. Two processes opening a fresh file at once can get "database is
    locked" here without SQLite's busy handler being consulted, so retry for as long as
    ``busy_timeout`` would have waited."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
