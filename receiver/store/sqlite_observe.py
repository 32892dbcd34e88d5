"""SQLite side of what the relay records to be watched: delivery attempts, the shared
sink health, the stream's feed, delivery statistics and retention.

Plain functions over the writer thread's connection, called by ``SqliteStore`` inside
the operation (so inside the transaction) that commits the outcome or event they
describe. SQLite serialises writers across processes, so the feed's ``seq`` is in
commit order and is the stream's cursor as is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from receiver.attempts import Attempt, NewAttempt
from receiver.errors import BadRequest
from receiver.events import DueDelivery, Event
from receiver.feed import FEED_COLUMNS, FeedEntry, FeedFilter, FeedItem, entry_values, filter_sql
from receiver.feed import item_data as _data
from receiver.sink_health import HealthChange, HealthState, SinkHealth
from receiver.store.group_commit import Committer
from receiver.store.observe import Pruned, SinkStats
from receiver.store.rows import DELIVERY_COLUMNS, delivery_from_row
from receiver.store.wakeup import WorkSignal

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

MIGRATION: tuple[str, ...] = (
    """CREATE TABLE delivery_attempts (
        seq INTEGER PRIMARY KEY,
        delivery_id TEXT NOT NULL,
        n INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        status INTEGER,
        error TEXT,
        host TEXT,
        response_excerpt TEXT
    )""",
    "CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, n)",
    """CREATE TABLE sink_health (
        sink TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'paused', 'probing')),
        failures INTEGER NOT NULL DEFAULT 0,
        opened_at INTEGER,
        last_error TEXT,
        probe_owner TEXT,
        probe_until INTEGER,
        opened_count INTEGER NOT NULL DEFAULT 0,
        closed_count INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
    )""",
    """CREATE TABLE feed (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        job_id TEXT,
        ref TEXT,
        provider TEXT,
        sink TEXT,
        event_id TEXT,
        delivery_id TEXT,
        body TEXT,
        created_at INTEGER NOT NULL
    )""",
    "CREATE INDEX feed_by_job ON feed (job_id, seq) WHERE job_id IS NOT NULL",
)


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _at(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + us * _MICROSECOND


# -- writes (inside the caller's operation) ----------------------------------------------


def append_feed(c: sqlite3.Connection, entries: Sequence[FeedEntry]) -> None:
    """Append feed entries; they commit (or roll back) with the caller's operation."""
    if entries:
        c.executemany(
            f"INSERT INTO feed ({FEED_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*entry_values(entry), _us(entry.created_at)) for entry in entries],
        )


def record_attempt(c: sqlite3.Connection, delivery_id: str, attempt: NewAttempt) -> int:
    """Insert the delivery's next attempt; returns its number ``n``."""
    row = c.execute(
        "INSERT INTO delivery_attempts (delivery_id, n, started_at, duration_ms, status,"
        " error, host, response_excerpt) VALUES (?, (SELECT COALESCE(MAX(n), 0) + 1"
        " FROM delivery_attempts WHERE delivery_id = ?), ?, ?, ?, ?, ?, ?) RETURNING n",
        (
            delivery_id,
            delivery_id,
            _us(attempt.started_at),
            attempt.duration_ms,
            attempt.status,
            attempt.error,
            attempt.host,
            attempt.response_excerpt,
        ),
    ).fetchone()
    return int(row[0])


_PAUSES = "(state = 'probing' OR (state = 'ok' AND failures + 1 >= :threshold))"


def apply_health(c: sqlite3.Connection, change: HealthChange) -> None:
    """Update the sink's shared circuit per ``sink_health.apply_change``."""
    params: dict[str, Any] = {
        "sink": change.sink,
        "error": change.error,
        "threshold": max(1, change.threshold),
        "now": _us(change.now),
    }
    if change.up:
        if change.error is None:
            c.execute(
                "UPDATE sink_health SET state = 'ok', failures = 0, probe_owner = NULL,"
                " probe_until = NULL, updated_at = :now,"
                " closed_count = closed_count + (state <> 'ok')"
                " WHERE sink = :sink AND (state <> 'ok' OR failures > 0)",
                params,
            )
            return
        c.execute(
            "INSERT INTO sink_health (sink, last_error, updated_at) VALUES (:sink, :error, :now)"
            " ON CONFLICT (sink) DO UPDATE SET state = 'ok', failures = 0, probe_owner = NULL,"
            " probe_until = NULL, last_error = :error, updated_at = :now,"
            " closed_count = closed_count + (state <> 'ok')",
            params,
        )
        return
    c.execute(
        "INSERT INTO sink_health (sink, state, failures, opened_at, last_error, opened_count,"
        " updated_at) VALUES (:sink, CASE WHEN :threshold <= 1 THEN 'paused' ELSE 'ok' END, 1,"
        " CASE WHEN :threshold <= 1 THEN :now END, :error, :threshold <= 1, :now)"
        " ON CONFLICT (sink) DO UPDATE SET failures = failures + 1, last_error = :error,"
        f" updated_at = :now, opened_at = CASE WHEN {_PAUSES} THEN :now ELSE opened_at END,"
        " opened_count = opened_count"
        " + (state = 'ok' AND failures + 1 >= :threshold),"
        f" probe_owner = CASE WHEN {_PAUSES} THEN NULL ELSE probe_owner END,"
        f" probe_until = CASE WHEN {_PAUSES} THEN NULL ELSE probe_until END,"
        f" state = CASE WHEN {_PAUSES} THEN 'paused' ELSE state END",
        params,
    )


# -- reads --------------------------------------------------------------------------------


def parse_cursor(cursor: str) -> int:
    """A feed cursor (``seq``); ``BadRequest`` for anything else."""
    text = cursor.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise BadRequest("not a stream cursor (Last-Event-ID)", field="last_event_id")
    return int(text)


def read_feed(
    c: sqlite3.Connection, after: str | None, where: FeedFilter, limit: int
) -> list[FeedItem]:
    """Entries after ``after`` (None: from the oldest kept) matching ``where``, in order."""
    start = 0 if after is None else parse_cursor(after)
    clause, params = filter_sql(where, lambda _: "?")
    rows = c.execute(
        "SELECT f.seq, f.type, COALESCE(f.body, e.body) AS body FROM feed AS f"
        " LEFT JOIN events AS e ON f.body IS NULL AND e.id = f.event_id"
        f" WHERE f.seq > ? AND {clause} ORDER BY f.seq LIMIT ?",
        (start, *params, limit),
    ).fetchall()
    return [FeedItem(str(row["seq"]), row["type"], _data(row["body"])) for row in rows]


def feed_head(c: sqlite3.Connection) -> str:
    """The cursor of the newest entry ("0" for an empty feed): reading after it gets
    only what commits from now on."""
    row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'feed'").fetchone()
    return str(row[0]) if row is not None else "0"


def list_attempts(c: sqlite3.Connection, delivery_id: str) -> list[Attempt]:
    rows = c.execute(
        "SELECT n, started_at, duration_ms, status, error, host, response_excerpt"
        " FROM delivery_attempts WHERE delivery_id = ? ORDER BY n, seq",
        (delivery_id,),
    )
    return [
        Attempt(
            n=row["n"],
            started_at=_at(row["started_at"]) or _EPOCH,
            duration_ms=row["duration_ms"],
            status=row["status"],
            error=row["error"],
            host=row["host"],
            response_excerpt=row["response_excerpt"],
        )
        for row in rows
    ]


def sink_health(c: sqlite3.Connection) -> dict[str, SinkHealth]:
    rows = c.execute("SELECT * FROM sink_health")
    return {
        row["sink"]: SinkHealth(
            sink=row["sink"],
            state=HealthState(row["state"]),
            failures=row["failures"],
            opened_at=_at(row["opened_at"]),
            last_error=row["last_error"],
            probe_owner=row["probe_owner"],
            probe_until=_at(row["probe_until"]),
            opened_count=row["opened_count"],
            closed_count=row["closed_count"],
            updated_at=_at(row["updated_at"]),
        )
        for row in rows
    }


def take_probe(
    c: sqlite3.Connection,
    sink: str,
    now: datetime,
    *,
    owner: str,
    lease_s: float,
    probe_interval_s: float,
) -> str | None:
    """If the sink's circuit may be probed now and it has a due delivery, lease that one
    delivery to ``owner``, mark the circuit probing under the same lease and return the
    delivery's id; else change nothing and return None."""
    at, until = _us(now), _us(now + timedelta(seconds=lease_s))
    row = c.execute("SELECT * FROM sink_health WHERE sink = ?", (sink,)).fetchone()
    if row is None:
        return None
    health = SinkHealth(
        sink=sink,
        state=HealthState(row["state"]),
        opened_at=_at(row["opened_at"]),
        probe_until=_at(row["probe_until"]),
    )
    if not health.probe_due(now, probe_interval_s):
        return None
    claimed = c.execute(
        "UPDATE deliveries SET lease_owner = ?, lease_until = ? WHERE id = ("
        "  SELECT id FROM deliveries WHERE state = 'pending' AND sink = ?"
        "    AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
        "  ORDER BY next_attempt_at, seq LIMIT 1) RETURNING id",
        (owner, until, sink, at, at),
    ).fetchone()
    if claimed is None:
        return None
    c.execute(
        "UPDATE sink_health SET state = 'probing', probe_owner = ?, probe_until = ?,"
        " updated_at = ? WHERE sink = ?",
        (owner, until, at, sink),
    )
    return str(claimed[0])


def delivery_stats(c: sqlite3.Connection) -> dict[str, SinkStats]:
    rows = c.execute(
        "SELECT sink, state, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries"
        " WHERE state IN ('pending', 'dead') GROUP BY sink, state"
    )
    found: dict[str, SinkStats] = {}
    for row in rows:
        stats = found.get(row["sink"], SinkStats())
        if row["state"] == "pending":
            stats = SinkStats(row["n"], stats.dead, _at(row["oldest"]))
        else:
            stats = SinkStats(stats.pending, row["n"], stats.oldest_pending_at)
        found[row["sink"]] = stats
    return found


def _oldest(c: sqlite3.Connection, sql: str, cutoff: int, limit: int) -> list[Any]:
    """Keys of the first ``limit`` rows in insertion order that are older than ``cutoff``.

    ``sql`` selects ``key, created, keep`` in insertion order. Rows are appended in time
    order, so the scan stops at the first newer row instead of reading the whole table
    (no index on the time column: it would cost every write)."""
    keys: list[Any] = []
    for key, created, keep in c.execute(sql, (limit,)):
        if created >= cutoff:
            break
        if not keep:
            keys.append(key)
    return keys


def prune(c: sqlite3.Connection, before: datetime, limit: int) -> Pruned:
    """Remove up to ``limit`` of each: attempts and feed entries older than ``before``,
    and events older than it whose deliveries are all finished (with those deliveries
    and their attempts). Pending work is never removed."""
    cutoff = _us(before)
    attempts = _delete(
        c,
        "delivery_attempts",
        "seq",
        _oldest(
            c,
            "SELECT seq, started_at, 0 FROM delivery_attempts ORDER BY seq LIMIT ?",
            cutoff,
            limit,
        ),
    )
    feed = _delete(
        c,
        "feed",
        "seq",
        _oldest(c, "SELECT seq, created_at, 0 FROM feed ORDER BY seq LIMIT ?", cutoff, limit),
    )
    old = _oldest(
        c,
        "SELECT e.id, e.created_at, EXISTS (SELECT 1 FROM deliveries AS d"
        " WHERE d.event_id = e.id AND d.state = 'pending') FROM events AS e"
        " ORDER BY e.seq LIMIT ?",
        cutoff,
        limit,
    )
    deliveries = events = 0
    if old:
        marks = ", ".join("?" * len(old))
        attempts += c.execute(
            "DELETE FROM delivery_attempts WHERE delivery_id IN"
            f" (SELECT id FROM deliveries WHERE event_id IN ({marks}))",
            old,
        ).rowcount
        deliveries = c.execute(f"DELETE FROM deliveries WHERE event_id IN ({marks})", old).rowcount
        events = c.execute(f"DELETE FROM events WHERE id IN ({marks})", old).rowcount
    return Pruned(events, deliveries, attempts, feed)


def _delete(c: sqlite3.Connection, table: str, key: str, values: list[Any]) -> int:
    if not values:
        return 0
    marks = ", ".join("?" * len(values))
    return c.execute(f"DELETE FROM {table} WHERE {key} IN ({marks})", values).rowcount


FEED_POLL_S = 0.5  # other processes' commits are not signalled on SQLite: look this often


class SqliteObservations:
    """The ``ObservableStore`` methods of ``SqliteStore`` (mixed in)."""

    _writer: Committer

    @property
    def _feed_signal(self) -> WorkSignal:
        signal: WorkSignal | None = self.__dict__.get("_feed_signal_")
        if signal is None:
            signal = self.__dict__["_feed_signal_"] = WorkSignal()
        return signal

    def _feed_appended(self) -> None:
        """This process committed feed entries: wake its stream readers."""
        self._feed_signal.notify()

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        return await self._writer.submit(lambda c: list_attempts(c, delivery_id), write=False)

    async def sink_health(self) -> dict[str, SinkHealth]:
        return await self._writer.submit(sink_health, write=False)

    async def claim_probe(
        self,
        sink: str,
        now: datetime,
        *,
        owner: str,
        lease_s: float,
        probe_interval_s: float,
    ) -> DueDelivery | None:
        def run(c: sqlite3.Connection) -> DueDelivery | None:
            delivery_id = take_probe(
                c, sink, now, owner=owner, lease_s=lease_s, probe_interval_s=probe_interval_s
            )
            if delivery_id is None:
                return None
            row = c.execute(
                f"SELECT {', '.join('d.' + n.strip() for n in DELIVERY_COLUMNS.split(','))},"
                " e.body FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
                " WHERE d.id = ?",
                (delivery_id,),
            ).fetchone()
            return DueDelivery(delivery_from_row(row, _at), Event.from_json(row["body"]))

        return await self._writer.submit(run)

    async def read_feed(
        self, after: str | None, where: FeedFilter, *, limit: int = 200
    ) -> list[FeedItem]:
        if after is not None:
            parse_cursor(after)  # a bad cursor fails here, not in the writer thread
        return await self._writer.submit(lambda c: read_feed(c, after, where, limit), write=False)

    async def feed_head(self) -> str:
        return await self._writer.submit(feed_head, write=False)

    async def wait_for_feed(self, timeout_s: float) -> None:
        await self._feed_signal.wait(min(timeout_s, FEED_POLL_S))

    async def delivery_stats(self) -> dict[str, SinkStats]:
        return await self._writer.submit(delivery_stats, write=False)

    async def prune(self, before: datetime, *, limit: int = 1000) -> Pruned:
        return await self._writer.submit(lambda c: prune(c, before, limit))
