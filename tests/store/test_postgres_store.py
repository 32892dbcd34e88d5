"""PostgreSQL specifics: NOTIFY across processes, schemas, listener recovery, test setup."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import pytest

from receiver.errors import ConfigError
from receiver.events import Job, JobStatus, ProviderUpdate, utcnow
from receiver.ingest import Outcome
from receiver.store import DeliveryFilter, open_store
from tests.helpers.postgres import pg_execute, pg_schema
from tests.store.conftest import PG_ENV, pg_dsn
from tests.store.factories import SECOND, T0, make_ingest, make_job, seed_deliveries

if TYPE_CHECKING:
    from receiver.store.postgres import PostgresStore
    from tests.store.conftest import Backend

postgres_only = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


async def _pair(backend: Backend) -> tuple[PostgresStore, PostgresStore]:
    one, two = backend.open(), backend.open()
    await one.migrate()
    return one, two  # type: ignore[return-value]


async def _woken_within(waiter: asyncio.Task[None], seconds: float) -> float:
    started = time.monotonic()
    await asyncio.wait_for(waiter, seconds)
    return time.monotonic() - started


@postgres_only
async def test_notify_wakes_a_waiter_in_another_store(backend: Backend) -> None:
    """An ingest committed through one store wakes wait_for_work on another at once."""
    one, two = await _pair(backend)
    await two.wait_for_work(0.01)  # opens the listening connection
    waiter = asyncio.create_task(two.wait_for_work(10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await one.ingest(make_ingest(None, task="across"))
    assert await _woken_within(waiter, 2) < 1


@postgres_only
async def test_a_burst_of_ingests_is_announced_coalesced_and_to_its_end(
    backend: Backend,
) -> None:
    """Ingests NOTIFY after their commit, not inside it (a NOTIFY per commit serialises
    commits), and a burst shares a few NOTIFYs; the last one follows the last commit."""
    import asyncpg

    one, two = await _pair(backend)
    heard: list[float] = []
    listener = await asyncpg.connect(backend.dsn)
    await listener.add_listener(
        "relay_work",
        lambda *args: heard.append(time.monotonic()) if args[3] == backend.schema else None,
    )
    try:
        await asyncio.gather(*(one.ingest(make_ingest(None, task=f"burst-{n}")) for n in range(40)))
        last_commit = time.monotonic()
        for _ in range(100):
            if heard and heard[-1] >= last_commit:
                break
            await asyncio.sleep(0.01)
        assert heard
        assert heard[-1] >= last_commit  # the burst's end was announced
        assert len(heard) < 20  # coalesced: not one per ingest
    finally:
        await listener.close()
        await one.close()
        await two.close()


@postgres_only
async def test_replay_and_release_notify_other_stores(backend: Backend) -> None:
    """Replay and release in one store wake a waiter in another."""
    one, two = await _pair(backend)
    await seed_deliveries(one, 2)
    done, leased = await one.claim_due(T0, limit=2, lease_s=30, owner="w")
    await one.mark_dead(done.delivery.id, status=500, error="x", now=T0)
    await two.wait_for_work(0.01)
    for action in (
        one.replay(DeliveryFilter(delivery_id=done.delivery.id), T0),
        one.release(leased.delivery.id, next_attempt_at=T0),
    ):
        await asyncio.sleep(0.05)  # let the previous notification arrive first
        await two.wait_for_work(0.001)
        waiter = asyncio.create_task(two.wait_for_work(10))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await action
        assert await _woken_within(waiter, 2) < 1


@postgres_only
async def test_a_poll_scheduled_by_another_store_wakes_the_poller_at_once(
    backend: Backend,
) -> None:
    """The poller sleeps on ``wait_for_work``: a poll that another process schedules
    (a Kie callback on a web process) reaches it through NOTIFY, far sooner than its
    60 s tick."""
    from receiver.metrics import Metrics
    from receiver.poller import Poller
    from tests.helpers.fakes import FakeProvider

    one, two = await _pair(backend)
    job = make_job(
        provider="fake", status=JobStatus.SUBMITTED, provider_task_id="task-x", next_poll_at=None
    )
    await one.create_job(job)
    provider = FakeProvider()
    polled = asyncio.Event()
    rounds = 0

    async def record(name: str, update: ProviderUpdate, job: Job | None) -> Outcome:
        polled.set()
        return Outcome(event_id=None)

    async def dispatch_queued() -> int:
        nonlocal rounds
        rounds += 1
        return 0

    poller = Poller(two, {"fake": provider}, record, dispatch_queued, Metrics(), tick_s=60.0)
    await two.wait_for_work(0.01)  # opens the listening connection
    running = asyncio.create_task(poller.run())
    try:
        async with asyncio.timeout(5):
            while rounds < 1:  # the first round is done: the poller now waits up to 60 s
                await asyncio.sleep(0.01)
        started = time.monotonic()
        await one.set_next_poll(job.id, utcnow())
        async with asyncio.timeout(5):
            await polled.wait()
        assert time.monotonic() - started < 5
        assert provider.polled == ["task-x"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


@postgres_only
async def test_other_schemas_do_not_wake_or_leak(backend: Backend) -> None:
    """A store on another schema sees none of this schema's rows or notifications."""
    from receiver.store.postgres import PostgresStore

    mine = backend.open()
    await mine.migrate()
    other_schema = backend.schema + "_other"
    other = PostgresStore(backend.dsn, schema=other_schema)
    backend.opened.append(other)
    try:
        await other.migrate()
        await mine.create_job(make_job())
        assert await other.list_jobs() == []
        await other.wait_for_work(0.01)
        started = time.monotonic()
        waiter = asyncio.create_task(other.wait_for_work(0.5))
        await mine.ingest(make_ingest(None, task="elsewhere"))
        await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - started >= 0.45  # it ran to its timeout: never woken
    finally:
        await other.close()
        from tests.store.conftest import pg_execute

        await pg_execute(backend.dsn, f"DROP SCHEMA IF EXISTS {other_schema} CASCADE")


@postgres_only
async def test_lost_listener_reconnects(backend: Backend) -> None:
    """If the listening connection dies, the next wait reopens it and wake-ups resume."""
    one, two = await _pair(backend)
    await two.wait_for_work(0.01)
    assert two._listener is not None
    pid = two._listener.get_server_pid()
    await one.ping()
    pool = await one._db()
    await pool.execute("SELECT pg_terminate_backend($1)", pid)
    for _ in range(100):
        if two._listener.is_closed():
            break
        await asyncio.sleep(0.01)
    await two.wait_for_work(0.01)
    assert not two._listener.is_closed()
    waiter = asyncio.create_task(two.wait_for_work(10))
    await asyncio.sleep(0.05)
    await one.ingest(make_ingest(None, task="after-reconnect"))
    assert await _woken_within(waiter, 2) < 1


@postgres_only
async def test_a_dead_workers_lease_passes_to_another_store(backend: Backend) -> None:
    """A delivery leased by a store that then went away is claimed by another after lease_s."""
    one, two = await _pair(backend)
    await seed_deliveries(one, 1)
    (taken,) = await one.claim_due(T0, limit=1, lease_s=5, owner="dies")
    await one.close()
    assert await two.claim_due(T0 + 4 * SECOND, limit=1, lease_s=5, owner="lives") == []
    (again,) = await two.claim_due(T0 + 5 * SECOND, limit=1, lease_s=5, owner="lives")
    assert again.delivery.id == taken.delivery.id


@postgres_only
async def test_closed_store_refuses_work(backend: Backend) -> None:
    """After close() the store raises instead of reconnecting."""
    store = backend.open()
    await store.migrate()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.ping()
    await store.wait_for_work(0.001)  # no listener can open: falls back to the timeout


def test_schema_names_are_checked() -> None:
    """Only plain identifiers are accepted as schema names (they are spliced into SQL)."""
    from receiver.store.postgres import PostgresStore

    for bad in ("Relay", "relay;drop", "", "1abc", "a" * 64):
        with pytest.raises(ConfigError):
            PostgresStore("postgresql://localhost/x", schema=bad)
    assert PostgresStore("postgresql://localhost/x").schema == "public"
    assert isinstance(open_store("postgres://localhost/x"), PostgresStore)


def test_pool_max_in_the_url_caps_the_pool() -> None:
    """``?pool_max=N`` sizes the pool and never reaches asyncpg; nonsense is refused."""
    from receiver.store.postgres import PostgresStore

    store = open_store("postgresql://localhost/x?schema=relay&pool_max=3&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert (store.schema, store._pool_size[1]) == ("relay", 3)
    assert store._dsn == "postgresql://localhost/x?sslmode=disable"
    for bad in ("0", "x", ""):
        with pytest.raises(ValueError, match="pool_max"):
            open_store(f"postgresql://localhost/x?pool_max={bad}")


def test_missing_server_fails_under_ci_and_skips_locally() -> None:
    """Without RELAY_TEST_PG the PostgreSQL half fails under CI=true and skips elsewhere."""
    with pytest.raises(pytest.fail.Exception, match=PG_ENV):
        pg_dsn({"CI": "true"})
    with pytest.raises(pytest.skip.Exception, match=PG_ENV):
        pg_dsn({"CI": "false"})
    assert pg_dsn({PG_ENV: "postgresql://h/db", "CI": "true"}) == "postgresql://h/db"


async def test_next_due_walks_the_index_to_the_same_answer() -> None:
    """``NEXT_DUE_SQL`` (two walks of ``deliveries_due``) equals the plain aggregate it
    replaced, ``MIN(GREATEST(next_attempt_at, lease_until))``, for random mixes of due
    times and leases (expired, running, none), on the real server."""
    from receiver.store.postgres import NEXT_DUE_SQL

    scan = (
        "SELECT MIN(GREATEST(next_attempt_at, lease_until)) FROM deliveries WHERE state = 'pending'"
    )
    draw = random.Random(20261202)
    async with pg_schema() as schema:
        await pg_execute(schema.dsn, f"CREATE SCHEMA {schema.schema}")
        async with schema.connect() as c:
            await c.execute(
                "CREATE TABLE deliveries (seq bigserial PRIMARY KEY, state text,"
                " next_attempt_at timestamptz, lease_until timestamptz);"
                "CREATE INDEX deliveries_due ON deliveries (next_attempt_at)"
                " WHERE state = 'pending'"
            )
            answers = set()
            for _ in range(150):
                await c.execute("TRUNCATE deliveries")
                rows = [
                    (
                        "pending" if draw.random() < 0.9 else "delivered",
                        T0 + draw.randint(0, 50) * SECOND,
                        None if draw.random() < 0.4 else T0 + draw.randint(0, 80) * SECOND,
                    )
                    for _ in range(draw.randint(0, 30))
                ]
                await c.executemany(
                    "INSERT INTO deliveries (state, next_attempt_at, lease_until)"
                    " VALUES ($1, $2, $3)",
                    rows,
                )
                expected = await c.fetchval(scan)
                assert await c.fetchval(NEXT_DUE_SQL) == expected, rows
                answers.add(expected is None)
            assert answers == {True, False}  # both empty and non-empty backlogs were drawn
