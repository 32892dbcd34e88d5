"""The stream's feed (``read_feed``, ``feed_head``, ``wait_for_feed``) on every backend."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from receiver.errors import BadRequest
from receiver.events import UpdateState
from receiver.feed import FeedFilter
from receiver.store import Store
from tests.store.factories import SECOND, T0, make_ingest, make_job, settle_feed

if TYPE_CHECKING:
    from tests.store.conftest import Backend


async def test_migrations_reach_version_two(store: Store) -> None:
    """The observation tables come with schema version 2."""
    assert await store.migrate() >= 2


async def test_each_committed_event_is_one_entry_with_the_event_json(store: Store) -> None:
    """Ingest appends one entry per new event (none for a duplicate); its data is the
    event JSON sinks get, and entries come back in commit order."""
    job = make_job()
    await store.create_job(job)
    progress = make_ingest(job, UpdateState.PROGRESS, progress=40)
    done = make_ingest(job, now=T0 + SECOND)
    assert await store.ingest(progress)
    assert not await store.ingest(progress)  # duplicate: no entry
    assert await store.ingest(done)
    await settle_feed(store, 2)
    items = await store.read_feed(None, FeedFilter())
    assert [item.type for item in items] == ["upscale.progress", "upscale.completed"]
    assert items[0].data == progress.event.as_dict()
    assert items[1].data == done.event.as_dict()
    assert items[0].cursor != items[1].cursor
    after_first = await store.read_feed(items[0].cursor, FeedFilter())
    assert [item.data["id"] for item in after_first] == [done.event.id]
    assert await store.read_feed(items[1].cursor, FeedFilter()) == []


async def test_filters_by_job_ref_provider_and_type_globs(store: Store) -> None:
    """job_id, ref, provider match exactly; types match exactly or by ``*`` glob."""
    one, two = make_job(ref="order-1"), make_job(ref="order-2")
    for job in (one, two):
        await store.create_job(job)
    await store.ingest(make_ingest(one, UpdateState.PROGRESS, progress=10, task="t1"))
    await store.ingest(make_ingest(one, task="t1"))
    await store.ingest(make_ingest(two, UpdateState.FAILED, task="t2"))
    await settle_feed(store, 3)

    async def ids(where: FeedFilter) -> list[tuple[str, str | None]]:
        return [(i.type, i.data["data"]["job_id"]) for i in await store.read_feed(None, where)]

    assert await ids(FeedFilter(job_id=one.id)) == [
        ("upscale.progress", one.id),
        ("upscale.completed", one.id),
    ]
    assert await ids(FeedFilter(ref="order-2")) == [("upscale.failed", two.id)]
    assert len(await ids(FeedFilter(provider="apiframe"))) == 3
    assert await ids(FeedFilter(provider="kie")) == []
    assert await ids(FeedFilter(types=("upscale.completed", "upscale.failed"))) == [
        ("upscale.completed", one.id),
        ("upscale.failed", two.id),
    ]
    assert len(await ids(FeedFilter(types=("upscale.*",)))) == 3
    assert await ids(FeedFilter(types=("delivery.*",))) == []
    assert await ids(FeedFilter(types=("upscale_progress",))) == []  # "_" is no wildcard
    limited = await store.read_feed(None, FeedFilter(), limit=2)
    assert len(limited) == 2


async def test_head_skips_history_and_bad_cursors_are_refused(store: Store) -> None:
    """Reading after ``feed_head`` yields only what commits afterwards; a cursor that
    is not one of the store's is a ``BadRequest``."""
    empty_head = await store.feed_head()
    assert await store.read_feed(empty_head, FeedFilter()) == []
    job = make_job()
    await store.create_job(job)
    await store.ingest(make_ingest(job, UpdateState.PROGRESS, progress=5))
    await settle_feed(store, 1)
    head = await store.feed_head()
    assert await store.read_feed(head, FeedFilter()) == []
    assert len(await store.read_feed(empty_head, FeedFilter())) == 1
    await store.ingest(make_ingest(job))
    await settle_feed(store, 2)
    assert [i.type for i in await store.read_feed(head, FeedFilter())] == ["upscale.completed"]
    for bad in ("abc", "-1", "1-2-3", "x" * 50, "9" * 40):
        with pytest.raises(BadRequest):
            await store.read_feed(bad, FeedFilter())


async def test_wait_for_feed_returns_when_another_store_commits(backend: Backend) -> None:
    """A reader on one store (another process, for PostgreSQL) wakes soon after a
    second store commits an event: NOTIFY on PostgreSQL, a short poll on SQLite."""
    reader, writer = backend.open(), backend.open()
    await reader.migrate()
    await writer.migrate()
    head = await reader.feed_head()
    await reader.wait_for_feed(0.01)  # listening from now on
    job = make_job()
    await writer.create_job(job)
    started = time.monotonic()
    waiter = asyncio.create_task(reader.wait_for_feed(10))
    await asyncio.sleep(0.05)
    await writer.ingest(make_ingest(job))
    await asyncio.wait_for(waiter, 5)
    assert time.monotonic() - started < 2.0
    deadline = time.monotonic() + 5
    while not (items := await reader.read_feed(head, FeedFilter())):
        assert time.monotonic() < deadline
        await reader.wait_for_feed(0.2)
    assert [item.type for item in items] == ["upscale.completed"]


async def test_wait_for_feed_times_out_when_idle(store: Store) -> None:
    started = time.monotonic()
    await store.wait_for_feed(0.05)
    assert time.monotonic() - started < 1.5


@pytest.mark.postgres
async def test_postgres_feed_never_skips_an_entry_that_commits_late() -> None:
    """A transaction that took its id first but commits last: its entry is held back
    until it commits, and then comes *before* the later one (no reader loses it)."""
    import secrets

    from receiver.store.postgres import PostgresStore
    from tests.helpers.postgres import pg_connect, pg_dsn, pg_execute

    dsn = pg_dsn()
    schema = f"relay_test_{secrets.token_hex(6)}"
    store = PostgresStore(dsn, schema=schema)
    try:
        await store.migrate()
        head = await store.feed_head()
        async with pg_connect(dsn, schema) as slow:
            transaction = slow.transaction()
            await transaction.start()
            await slow.execute(
                "INSERT INTO feed (type, job_id, created_at)"
                " VALUES ('upscale.progress', 'slow', now())"
            )
            job = make_job()
            await store.create_job(job)
            await store.ingest(make_ingest(job))  # commits while "slow" is open
            assert await store.read_feed(head, FeedFilter()) == []  # held back, not skipped
            await transaction.commit()
        await settle_feed(store, 2)
        items = await store.read_feed(head, FeedFilter())
        assert [item.type for item in items] == ["upscale.progress", "upscale.completed"]
        assert await store.read_feed(items[-1].cursor, FeedFilter()) == []
    finally:
        await store.close()
        await pg_execute(dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
