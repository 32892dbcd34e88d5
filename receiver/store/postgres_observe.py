"""PostgreSQL side of what the relay records to be watched: delivery attempts, the
shared sink health, the stream's feed, delivery statistics and retention.

The feed's order must be commit order, which an identity column is not (a transaction
that took seq 10 may commit after the one that took seq 11). Each entry therefore also
stores its transaction id (``pg_current_xact_id()``) and readers take entries ordered
by ``(tx, seq)`` only from transactions older than their snapshot's ``xmin``: those
have all finished, so nothing can later appear behind the cursor ``tx-seq``. A long
transaction elsewhere in the cluster delays the stream (never loses an entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from receiver.attempts import Attempt
from receiver.errors import BadRequest
from receiver.events import DueDelivery, Event
from receiver.feed import FeedFilter, FeedItem, filter_sql
from receiver.feed import item_data as _data
from receiver.sink_health import HealthState, SinkHealth
from receiver.store.observe import Pruned, SinkStats
from receiver.store.rows import delivery_from_row
from receiver.store.wakeup import WorkSignal

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import PoolConnectionProxy

    from receiver.store.base import DeliveryOutcome

    Connection = PoolConnectionProxy[Record]

FEED_CHANNEL = "relay_feed"

MIGRATION: tuple[str, ...] = (
    # no primary key: rows are read by delivery (the index) and pruned by age (ctid),
    # and every index is paid on the delivery hot path
    """CREATE TABLE delivery_attempts (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        delivery_id text NOT NULL,
        n integer NOT NULL,
        started_at timestamptz NOT NULL,
        duration_ms double precision NOT NULL,
        status integer,
        error text,
        host text,
        response_excerpt text
    )""",
    "CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, n)",
    """CREATE TABLE sink_health (
        sink text PRIMARY KEY,
        state text NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'paused', 'probing')),
        failures integer NOT NULL DEFAULT 0,
        opened_at timestamptz,
        last_error text,
        probe_owner text,
        probe_until timestamptz,
        opened_count integer NOT NULL DEFAULT 0,
        closed_count integer NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL
    )""",
    """CREATE TABLE feed (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
        type text NOT NULL,
        job_id text,
        ref text,
        provider text,
        sink text,
        event_id text,
        delivery_id text,
        body text,
        created_at timestamptz NOT NULL,
        PRIMARY KEY (tx, seq)
    )""",
    "CREATE INDEX feed_by_job ON feed (job_id, tx, seq) WHERE job_id IS NOT NULL",
)

_CURSOR = re.compile(r"(\d{1,20})-(\d{1,19})")
_VISIBLE = "f.tx < pg_snapshot_xmin(pg_current_snapshot())"


# -- writes: inside the outcome's statement ------------------------------------------


#: The observation CTEs of one delivery outcome, appended to the statement whose CTE
#: ``changed`` applied the outcome (so: one round trip, one transaction). Parameters
#: from $11: the attempt ($11 write it, $12 started_at … $17 excerpt), the feed entry
#: ($18 write it, $19 type … $25 body), the sink health ($26 'down' | 'up' |
#: 'up_error' | NULL, $27 sink, $28 error, $29 threshold); $6 is the outcome's time.
#: The feed's NOTIFY is not in it: see ``PostgresObservations._feed_appended``.
_DOWN = "(sink_health.state = 'probing' OR (sink_health.state = 'ok'"
_DOWN += " AND sink_health.failures + 1 >= $29))"
OUTCOME_CTES = f"""
attempt AS (
    INSERT INTO delivery_attempts
        (delivery_id, n, started_at, duration_ms, status, error, host, response_excerpt)
    SELECT $7, COALESCE((SELECT MAX(n) FROM delivery_attempts WHERE delivery_id = $7), 0) + 1,
        $12, $13, $14, $15, $16, $17
    FROM changed WHERE $11
), feed_entry AS (
    INSERT INTO feed (type, job_id, ref, provider, sink, event_id, delivery_id, body, created_at)
    SELECT $19, $20, $21, $22, $23, $24, $7, $25, $6 FROM changed WHERE $18
), health_down AS (
    INSERT INTO sink_health
        (sink, state, failures, opened_at, last_error, opened_count, updated_at)
    SELECT $27, CASE WHEN $29 <= 1 THEN 'paused' ELSE 'ok' END, 1,
        CASE WHEN $29 <= 1 THEN $6::timestamptz END, $28, CASE WHEN $29 <= 1 THEN 1 ELSE 0 END, $6
    WHERE $26::text = 'down'
    ON CONFLICT (sink) DO UPDATE SET failures = sink_health.failures + 1, last_error = $28,
        updated_at = $6, opened_at = CASE WHEN {_DOWN} THEN $6 ELSE sink_health.opened_at END,
        opened_count = sink_health.opened_count + CASE WHEN sink_health.state = 'ok'
            AND sink_health.failures + 1 >= $29 THEN 1 ELSE 0 END,
        probe_owner = CASE WHEN {_DOWN} THEN NULL ELSE sink_health.probe_owner END,
        probe_until = CASE WHEN {_DOWN} THEN NULL ELSE sink_health.probe_until END,
        state = CASE WHEN {_DOWN} THEN 'paused' ELSE sink_health.state END
), health_up AS (
    UPDATE sink_health SET state = 'ok', failures = 0, probe_owner = NULL, probe_until = NULL,
        updated_at = $6, closed_count = closed_count + CASE WHEN state <> 'ok' THEN 1 ELSE 0 END
    WHERE sink = $27 AND $26::text = 'up' AND (state <> 'ok' OR failures > 0)
), health_up_error AS (
    INSERT INTO sink_health (sink, last_error, updated_at) SELECT $27, $28, $6
    WHERE $26::text = 'up_error'
    ON CONFLICT (sink) DO UPDATE SET state = 'ok', failures = 0, probe_owner = NULL,
        probe_until = NULL, last_error = $28, updated_at = $6,
        closed_count = sink_health.closed_count
            + CASE WHEN sink_health.state <> 'ok' THEN 1 ELSE 0 END
)"""


def outcome_params(outcome: DeliveryOutcome) -> tuple[Any, ...]:
    """Parameters $11 … $29 of ``OUTCOME_CTES`` for ``outcome``."""
    attempt, feed, health = outcome.attempt, outcome.feed, outcome.health
    mode = None
    if health is not None:
        mode = "down" if not health.up else ("up_error" if health.error is not None else "up")
    return (
        attempt is not None,
        attempt.started_at if attempt else None,
        attempt.duration_ms if attempt else None,
        attempt.status if attempt else None,
        attempt.error if attempt else None,
        attempt.host if attempt else None,
        attempt.response_excerpt if attempt else None,
        feed is not None,
        feed.type if feed else None,
        feed.job_id if feed else None,
        feed.ref if feed else None,
        feed.provider if feed else None,
        feed.sink if feed else None,
        feed.event_id if feed else None,
        feed.body if feed else None,
        mode,
        health.sink if health else None,
        health.error if health else None,
        max(1, health.threshold) if health else 1,
    )


# -- reads ----------------------------------------------------------------------------------


def parse_cursor(cursor: str) -> tuple[int, int]:
    """``tx-seq`` (or ``0``: the very start); ``BadRequest`` for anything else."""
    text = cursor.strip()
    if text == "0":
        return 0, 0
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise BadRequest("not a stream cursor (Last-Event-ID)", field="last_event_id")
    return int(match.group(1)), int(match.group(2))


async def read_feed(
    c: Connection, after: str | None, where: FeedFilter, limit: int
) -> list[FeedItem]:
    tx, seq = (0, 0) if after is None else parse_cursor(after)
    clause, params = filter_sql(where, lambda n: f"${n + 3}")
    rows = await c.fetch(
        "SELECT f.tx::text AS tx, f.seq, f.type, COALESCE(f.body, e.body) AS body FROM feed AS f"
        " LEFT JOIN events AS e ON f.body IS NULL AND e.id = f.event_id"
        f" WHERE (f.tx, f.seq) > ($1::text::xid8, $2) AND {_VISIBLE} AND {clause}"
        " ORDER BY f.tx, f.seq LIMIT $3",
        str(tx),
        seq,
        limit,
        *params,
    )
    return [FeedItem(f"{row['tx']}-{row['seq']}", row["type"], _data(row["body"])) for row in rows]


async def feed_head(c: Connection) -> str:
    row = await c.fetchrow(
        f"SELECT f.tx::text AS tx, f.seq FROM feed AS f WHERE {_VISIBLE}"
        " ORDER BY f.tx DESC, f.seq DESC LIMIT 1"
    )
    return "0" if row is None else f"{row['tx']}-{row['seq']}"


async def list_attempts(c: Connection, delivery_id: str) -> list[Attempt]:
    rows = await c.fetch(
        "SELECT n, started_at, duration_ms, status, error, host, response_excerpt"
        " FROM delivery_attempts WHERE delivery_id = $1 ORDER BY n, seq",
        delivery_id,
    )
    return [
        Attempt(
            n=row["n"],
            started_at=row["started_at"],
            duration_ms=row["duration_ms"],
            status=row["status"],
            error=row["error"],
            host=row["host"],
            response_excerpt=row["response_excerpt"],
        )
        for row in rows
    ]


def _health(row: Any) -> SinkHealth:
    return SinkHealth(
        sink=row["sink"],
        state=HealthState(row["state"]),
        failures=row["failures"],
        opened_at=row["opened_at"],
        last_error=row["last_error"],
        probe_owner=row["probe_owner"],
        probe_until=row["probe_until"],
        opened_count=row["opened_count"],
        closed_count=row["closed_count"],
        updated_at=row["updated_at"],
    )


async def sink_health(c: Connection) -> dict[str, SinkHealth]:
    return {row["sink"]: _health(row) for row in await c.fetch("SELECT * FROM sink_health")}


async def take_probe(
    c: Connection,
    sink: str,
    now: datetime,
    *,
    owner: str,
    lease_s: float,
    probe_interval_s: float,
) -> Record | None:
    """Inside the caller's transaction: lock the sink's row, and if its circuit may be
    probed now lease one due delivery (returned with its event body) and mark the
    circuit probing under that lease. None (nothing changed) otherwise."""
    row = await c.fetchrow("SELECT * FROM sink_health WHERE sink = $1 FOR UPDATE", sink)
    if row is None or not _health(row).probe_due(now, probe_interval_s):
        return None
    until = now + timedelta(seconds=lease_s)
    claimed: Record | None = await c.fetchrow(
        "WITH due AS ("
        "  SELECT id FROM deliveries WHERE state = 'pending' AND sink = $1"
        "    AND next_attempt_at <= $2 AND (lease_until IS NULL OR lease_until <= $2)"
        "  ORDER BY next_attempt_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " UPDATE deliveries AS d SET lease_owner = $3, lease_until = $4"
        " FROM due, events AS e WHERE d.id = due.id AND e.id = d.event_id"
        " RETURNING d.*, e.body",
        sink,
        now,
        owner,
        until,
    )
    if claimed is None:
        return None
    await c.execute(
        "UPDATE sink_health SET state = 'probing', probe_owner = $2, probe_until = $3,"
        " updated_at = $4 WHERE sink = $1",
        sink,
        owner,
        until,
        now,
    )
    return claimed


async def delivery_stats(c: Connection) -> dict[str, SinkStats]:
    rows = await c.fetch(
        "SELECT sink, state, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries"
        " WHERE state IN ('pending', 'dead') GROUP BY sink, state"
    )
    found: dict[str, SinkStats] = {}
    for row in rows:
        stats = found.get(row["sink"], SinkStats())
        if row["state"] == "pending":
            stats = SinkStats(int(row["n"]), stats.dead, row["oldest"])
        else:
            stats = SinkStats(stats.pending, int(row["n"]), stats.oldest_pending_at)
        found[row["sink"]] = stats
    return found


async def _oldest(c: Connection, sql: str, before: datetime, limit: int) -> list[Any]:
    """Keys of the first ``limit`` rows in insertion order older than ``before``;
    stops at the first newer row (rows are appended in time order)."""
    keys: list[Any] = []
    for key, created, keep in await c.fetch(sql, limit):
        if created >= before:
            break
        if not keep:
            keys.append(key)
    return keys


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def prune(c: Connection, before: datetime, limit: int) -> Pruned:
    """Inside the caller's transaction; see ``sqlite_observe.prune``."""
    # the heap keeps rows roughly in insertion order: a scan finds the old ones first
    attempts = _count(
        await c.execute(
            "DELETE FROM delivery_attempts WHERE ctid = ANY(ARRAY(SELECT ctid"
            " FROM delivery_attempts WHERE started_at < $1 LIMIT $2))",
            before,
            limit,
        )
    )
    feed = _count(
        await c.execute(
            "DELETE FROM feed WHERE ctid = ANY(ARRAY(SELECT ctid"
            " FROM feed WHERE created_at < $1 LIMIT $2))",
            before,
            limit,
        )
    )
    old = await _oldest(
        c,
        "SELECT e.id, e.created_at, EXISTS (SELECT 1 FROM deliveries AS d"
        " WHERE d.event_id = e.id AND d.state = 'pending') FROM events AS e"
        " ORDER BY e.seq LIMIT $1",
        before,
        limit,
    )
    deliveries = events = 0
    if old:
        attempts += _count(
            await c.execute(
                "DELETE FROM delivery_attempts WHERE delivery_id IN"
                " (SELECT id FROM deliveries WHERE event_id = ANY($1::text[]))",
                old,
            )
        )
        deliveries = _count(
            await c.execute("DELETE FROM deliveries WHERE event_id = ANY($1::text[])", old)
        )
        events = _count(await c.execute("DELETE FROM events WHERE id = ANY($1::text[])", old))
    return Pruned(events, deliveries, attempts, feed)


FEED_POLL_S = 1.0  # also look this often: a long transaction elsewhere holds entries back
NOTIFY_EVERY_S = 0.02  # at most one feed NOTIFY per process this often
WORK_CHANNEL = "relay_work"  # ingest notifies it: a new event is a new feed entry too


class PostgresObservations:
    """The ``ObservableStore`` methods of ``PostgresStore`` (mixed in). Stream readers
    listen on their own connection (opened on first wait), to ``relay_feed`` (delivery
    outcomes) and ``relay_work`` (ingest)."""

    schema: str
    _dsn: str
    _closed: bool

    if TYPE_CHECKING:

        async def _db(self) -> asyncpg.Pool[Record]: ...

    @property
    def _feed_signal(self) -> WorkSignal:
        signal: WorkSignal | None = self.__dict__.get("_feed_signal_")
        if signal is None:
            signal = self.__dict__["_feed_signal_"] = WorkSignal()
        return signal

    def _feed_appended(self) -> None:
        """Outcomes were committed with feed entries: wake this process's readers now,
        and other processes' through one ``NOTIFY relay_feed`` per ``NOTIFY_EVERY_S``.

        The NOTIFY is sent after the commit, not inside the outcome's transaction: a
        NOTIFY serialises commits server-wide, which cost two thirds of the outcome
        throughput when every outcome sent one. Ingest's own NOTIFY (``relay_work``)
        is unchanged and wakes stream readers too."""
        self._feed_signal.notify()
        if self._closed:
            return
        pending: asyncio.Task[None] | None = self.__dict__.get("_feed_notifier")
        if pending is None or pending.done():
            self.__dict__["_feed_notifier"] = asyncio.get_running_loop().create_task(
                self._notify_feed()
            )

    async def _notify_feed(self) -> None:
        await asyncio.sleep(NOTIFY_EVERY_S)  # gather what the next moments commit
        with contextlib.suppress(OSError, asyncpg.PostgresError, RuntimeError):
            await (await self._db()).execute("SELECT pg_notify($1, $2)", FEED_CHANNEL, self.schema)

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        async with (await self._db()).acquire() as c:
            return await list_attempts(c, delivery_id)

    async def sink_health(self) -> dict[str, SinkHealth]:
        async with (await self._db()).acquire() as c:
            return await sink_health(c)

    async def claim_probe(
        self,
        sink: str,
        now: datetime,
        *,
        owner: str,
        lease_s: float,
        probe_interval_s: float,
    ) -> DueDelivery | None:
        async with (await self._db()).acquire() as c, c.transaction():
            row = await take_probe(
                c, sink, now, owner=owner, lease_s=lease_s, probe_interval_s=probe_interval_s
            )
        if row is None:
            return None
        delivery = delivery_from_row(row, lambda moment: moment)
        return DueDelivery(delivery, Event.from_json(row["body"]))

    async def read_feed(
        self, after: str | None, where: FeedFilter, *, limit: int = 200
    ) -> list[FeedItem]:
        async with (await self._db()).acquire() as c:
            return await read_feed(c, after, where, limit)

    async def feed_head(self) -> str:
        async with (await self._db()).acquire() as c:
            return await feed_head(c)

    async def wait_for_feed(self, timeout_s: float) -> None:
        listener: asyncpg.Connection[Record] | None = self.__dict__.get("_feed_listener")
        if not self._closed and (listener is None or listener.is_closed()):
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                await self._listen_feed()
        await self._feed_signal.wait(min(timeout_s, FEED_POLL_S))

    async def _listen_feed(self) -> None:
        lock: asyncio.Lock = self.__dict__.setdefault("_feed_listen_lock", asyncio.Lock())
        async with lock:
            current = self.__dict__.get("_feed_listener")
            if current is not None and not current.is_closed():
                return
            listener = await asyncpg.connect(self._dsn, timeout=5)
            for channel in (FEED_CHANNEL, WORK_CHANNEL):
                await listener.add_listener(channel, self._on_feed_notification)
            self.__dict__["_feed_listener"] = listener

    def _on_feed_notification(
        self, connection: object, pid: int, channel: str, payload: object
    ) -> None:
        if payload == self.schema:
            self._feed_signal.notify()

    async def _close_observations(self) -> None:
        notifier: asyncio.Task[None] | None = self.__dict__.pop("_feed_notifier", None)
        if notifier is not None and not notifier.done():
            notifier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await notifier
        listener = self.__dict__.pop("_feed_listener", None)
        if listener is not None:
            await listener.close()

    async def delivery_stats(self) -> dict[str, SinkStats]:
        async with (await self._db()).acquire() as c:
            return await delivery_stats(c)

    async def prune(self, before: datetime, *, limit: int = 1000) -> Pruned:
        async with (await self._db()).acquire() as c, c.transaction():
            return await prune(c, before, limit)
