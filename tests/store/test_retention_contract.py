"""``prune``: what retention removes, and what it never does, on every backend."""

from __future__ import annotations

from datetime import timedelta

from receiver.events import DeliveryState, UpdateState, utcnow
from receiver.feed import FeedFilter
from receiver.retention import prune_once
from receiver.store import DeliveryFilter, Store
from tests.store.factories import SECOND, T0, make_ingest, make_job, settle_feed

HOUR = timedelta(hours=1)


async def test_prune_removes_old_finished_events_but_never_pending_work(store: Store) -> None:
    job = make_job()
    await store.create_job(job)
    old_done = make_ingest(job, UpdateState.PROGRESS, progress=10, now=T0)
    old_pending = make_ingest(job, UpdateState.PROGRESS, progress=20, now=T0 + SECOND)
    recent = make_ingest(job, now=T0 + 3 * HOUR)
    for record in (old_done, old_pending, recent):
        assert await store.ingest(record)
    done = await store.list_deliveries(DeliveryFilter(event_id=old_done.event.id))
    await store.mark_delivered(done[0].id, status=200, now=T0 + SECOND)
    await store.mark_dead(done[1].id, status=410, error="gone", now=T0 + SECOND)

    await settle_feed(store, 3)
    pruned = await store.prune(T0 + 2 * HOUR, limit=100)
    assert (pruned.events, pruned.deliveries) == (1, 2)
    assert pruned.feed == 2  # both old entries; their events' fate does not matter
    assert await store.get_event(old_done.event.id) is None
    assert await store.get_event(old_pending.event.id) is not None  # still pending
    assert await store.get_event(recent.event.id) is not None
    left = await store.list_deliveries(DeliveryFilter(job_id=job.id))
    assert {d.event_id for d in left} == {old_pending.event.id, recent.event.id}
    assert all(d.state is DeliveryState.PENDING for d in left)
    feed = await store.read_feed(None, FeedFilter())
    assert [item.data["id"] for item in feed] == [recent.event.id]
    assert (await store.prune(T0 + 2 * HOUR, limit=100)).total == 0


async def test_prune_works_in_batches_until_done(store: Store) -> None:
    for n in range(7):
        assert await store.ingest(make_ingest(None, task=f"t{n}", sinks=(), now=T0 + n * SECOND))
    first = await store.prune(T0 + HOUR, limit=3)
    assert (first.events, first.feed) == (3, 3)
    retention_days = (utcnow() - T0).total_seconds() / 86400 - 1 / 24  # T0 is older
    total = await prune_once(store, retention_days, batch=3)
    assert (total.events, total.feed) == (4, 4)
    assert await store.read_feed(None, FeedFilter()) == []
    assert (await prune_once(store, 0)).total == 0  # 0 keeps everything
