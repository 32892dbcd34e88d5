"""What ``record_outcome`` writes besides the delivery (its attempt, its feed entry, its
sink-health change), shared circuits and probes, statistics — on every backend."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from receiver.attempts import NewAttempt
from receiver.decision import Decision
from receiver.events import DeliveryState, DueDelivery
from receiver.feed import FeedFilter, OutcomeType, outcome_entry
from receiver.sink_health import HealthChange, HealthState
from receiver.store import DeliveryFilter, DeliveryOutcome, Store
from tests.store.factories import SECOND, T0, make_ingest, make_job, seed_deliveries, settle_feed

if TYPE_CHECKING:
    from tests.store.conftest import Backend


def attempt(
    n_ms: float = 12.5, status: int | None = 503, error: str | None = "HTTP 503"
) -> NewAttempt:
    return NewAttempt(
        started_at=T0 + timedelta(milliseconds=250),
        duration_ms=n_ms,
        status=status,
        error=error,
        host="app.example.com",
        response_excerpt='{"busy":true}',
    )


def outcome(
    item: DueDelivery,
    decision: Decision,
    *,
    up: bool,
    error: str | None = None,
    threshold: int = 3,
    at: int = 1,
) -> DeliveryOutcome:
    now = T0 + at * SECOND
    kind = {
        DeliveryState.DELIVERED: OutcomeType.DELIVERED,
        DeliveryState.DEAD: OutcomeType.DEAD,
    }.get(decision.state, OutcomeType.RETRY_SCHEDULED)
    feed = outcome_entry(
        kind,
        item.delivery,
        item.event,
        attempt=item.delivery.attempts + 1,
        status=decision.status,
        error=decision.error,
        duration_ms=12.5,
        next_attempt_at=decision.at,
        now=now,
    )
    health = HealthChange(item.delivery.sink, up, error, threshold, now)
    ok = decision.state is DeliveryState.DELIVERED
    row = attempt(status=decision.status, error=None if ok else decision.error)
    return DeliveryOutcome(item.delivery.id, decision, now, attempt=row, feed=feed, health=health)


async def claim_one(store: Store, at: int = 0) -> DueDelivery:
    [item] = await store.claim_due(T0 + at * SECOND, limit=1, lease_s=30, owner="w1")
    return item


async def test_each_outcome_records_its_attempt_and_feed_entry(store: Store) -> None:
    """A retry then a success: two attempts (numbered, every field back as written) and
    two ``delivery.*`` feed entries; ``n`` goes on after a replay."""
    job = make_job()
    await store.create_job(job)
    await store.ingest(make_ingest(job, sinks=("app",)))
    await settle_feed(store, 1)
    head = await store.feed_head()
    item = await claim_one(store)
    retry = Decision.retry(T0 + 2 * SECOND, 503, "HTTP 503")
    await store.record_outcome(outcome(item, retry, up=False, error="HTTP 503"))
    item = await claim_one(store, at=3)
    await store.record_outcome(outcome(item, Decision.delivered(200), up=True, at=4))

    await settle_feed(store, 3)
    attempts = await store.list_attempts(item.delivery.id)
    assert [(a.n, a.status, a.error) for a in attempts] == [(1, 503, "HTTP 503"), (2, 200, None)]
    first = attempts[0]
    assert first.started_at == T0 + timedelta(milliseconds=250)
    assert first.started_at.utcoffset() == timedelta(0)
    assert (first.duration_ms, first.host, first.response_excerpt) == (
        12.5,
        "app.example.com",
        '{"busy":true}',
    )
    feed = await store.read_feed(head, FeedFilter(types=("delivery.*",)))
    assert [i.type for i in feed] == ["delivery.retry_scheduled", "delivery.delivered"]
    assert feed[0].data["delivery_id"] == item.delivery.id
    assert feed[0].data["job_id"] == job.id
    assert feed[0].data["ref"] == "order-42"
    assert (feed[0].data["attempt"], feed[0].data["status"]) == (1, 503)
    assert feed[0].data["next_attempt_at"] == "2026-11-23T18:00:02Z"
    assert (feed[1].data["attempt"], feed[1].data["state"]) == (2, "delivered")
    assert [i.type for i in await store.read_feed(head, FeedFilter(sink="app"))] == [
        "delivery.retry_scheduled",
        "delivery.delivered",
    ]
    assert await store.read_feed(head, FeedFilter(sink="other")) == []

    assert await store.replay(DeliveryFilter(delivery_id=item.delivery.id), T0 + 5 * SECOND) == 1
    item = await claim_one(store, at=6)
    assert item.delivery.attempts == 0
    await store.record_outcome(outcome(item, Decision.delivered(204), up=True, at=7))
    assert [a.n for a in await store.list_attempts(item.delivery.id)] == [1, 2, 3]
    assert await store.list_attempts("dlv_missing") == []


async def test_an_outcome_that_no_longer_applies_writes_no_attempt(store: Store) -> None:
    """The delivery is not pending any more (another worker recorded it): no attempt,
    no feed entry, and the sink's health still learns from the answer."""
    await seed_deliveries(store, 1, sinks=("app",))
    item = await claim_one(store)
    await store.mark_delivered(item.delivery.id, status=200, now=T0 + SECOND)
    await settle_feed(store, 1)
    head = await store.feed_head()
    late = Decision.retry(T0 + 9 * SECOND, 503, "HTTP 503")
    await store.record_outcome(outcome(item, late, up=False, error="HTTP 503", threshold=1))
    assert await store.list_attempts(item.delivery.id) == []
    assert await store.read_feed(head, FeedFilter()) == []
    assert (await store.sink_health())["app"].state is HealthState.PAUSED


async def test_shared_circuit_pauses_probes_once_and_closes(backend: Backend) -> None:
    """Failures pause the sink for every store; after the probe interval exactly one of
    two workers gets the probe; its success closes the circuit for both."""
    one, two = backend.open(), backend.open()
    await one.migrate()
    await seed_deliveries(one, 4, sinks=("app",))
    for n in range(2):
        item = await claim_one(one, at=n)
        retry = Decision.retry(T0, 503, "HTTP 503")
        await one.record_outcome(outcome(item, retry, up=False, error="HTTP 503", threshold=2))
    health = (await two.sink_health())["app"]
    assert (health.state, health.failures, health.opened_count) == (HealthState.PAUSED, 2, 1)
    assert health.opened_at == T0 + SECOND
    assert health.last_error == "HTTP 503"

    early = T0 + 5 * SECOND
    probe = {"owner": "w1", "lease_s": 30.0, "probe_interval_s": 10.0}
    assert await one.claim_probe("app", early, **probe) is None  # interval not over
    at = T0 + 12 * SECOND
    won = await asyncio.gather(
        one.claim_probe("app", at, **probe), two.claim_probe("app", at, **{**probe, "owner": "w2"})
    )
    probes = [p for p in won if p is not None]
    assert len(probes) == 1
    assert probes[0].event.id
    health = (await one.sink_health())["app"]
    assert health.state is HealthState.PROBING
    assert health.probe_until == at + timedelta(seconds=30)
    assert await two.claim_probe("app", at + SECOND, **probe) is None  # leased
    assert await one.claim_probe("nosuch", at, **probe) is None

    await two.record_outcome(outcome(probes[0], Decision.delivered(200), up=True, at=13))
    health = (await one.sink_health())["app"]
    assert (health.state, health.failures, health.closed_count) == (HealthState.OK, 0, 1)
    assert health.probe_owner is None


async def test_a_failed_probe_pauses_again_and_an_abandoned_one_is_retaken(store: Store) -> None:
    await seed_deliveries(store, 2, sinks=("app",))
    item = await claim_one(store)
    fail = Decision.retry(T0, 503, "HTTP 503")
    await store.record_outcome(outcome(item, fail, up=False, error="HTTP 503", threshold=1))
    probe = {"owner": "w1", "lease_s": 5.0, "probe_interval_s": 1.0}
    taken = await store.claim_probe("app", T0 + 3 * SECOND, **probe)
    assert taken is not None
    # the prober died: once its lease is over another worker probes
    again = await store.claim_probe("app", T0 + 9 * SECOND, **{**probe, "owner": "w2"})
    assert again is not None
    await store.record_outcome(outcome(again, fail, up=False, error="down", threshold=1, at=10))
    health = (await store.sink_health())["app"]
    assert (health.state, health.opened_at, health.last_error) == (
        HealthState.PAUSED,
        T0 + 10 * SECOND,
        "down",
    )
    assert health.opened_count == 1  # re-paused, not re-opened


async def test_a_permanent_error_keeps_the_sink_up_with_its_error(store: Store) -> None:
    await seed_deliveries(store, 1, sinks=("app",))
    item = await claim_one(store)
    dead = Decision.dead(410, "HTTP 410: gone")
    await store.record_outcome(outcome(item, dead, up=True, error="HTTP 410: gone"))
    health = (await store.sink_health())["app"]
    assert (health.state, health.last_error) == (HealthState.OK, "HTTP 410: gone")
    [row] = await store.list_attempts(item.delivery.id)
    assert (row.status, row.error) == (410, "HTTP 410: gone")


async def test_delivery_stats_count_pending_and_dead_per_sink(store: Store) -> None:
    assert await store.delivery_stats() == {}
    await seed_deliveries(store, 3, sinks=("app", "team"))
    [item] = await store.claim_due(T0, limit=1, lease_s=30, owner="w", exclude_sinks=["team"])
    await store.mark_dead(item.delivery.id, status=410, error="gone", now=T0)
    stats = await store.delivery_stats()
    assert (stats["app"].pending, stats["app"].dead) == (2, 1)
    assert (stats["team"].pending, stats["team"].dead) == (3, 0)
    assert stats["team"].oldest_pending_at == T0


async def test_prune_removes_old_attempts_too(store: Store) -> None:
    await seed_deliveries(store, 1, sinks=("app",))
    item = await claim_one(store)
    await store.record_outcome(outcome(item, Decision.delivered(200), up=True))
    pruned = await store.prune(T0 + timedelta(days=1), limit=100)
    assert (pruned.events, pruned.deliveries, pruned.attempts) == (1, 1, 1)
    assert await store.list_attempts(item.delivery.id) == []


async def test_one_batch_records_every_attempt_feed_entry_and_health_change(
    store: Store,
) -> None:
    """``record_outcomes`` (the worker's batch) writes what each outcome holds in the one
    transaction: the failures that cross the threshold pause the sink, each delivery
    gets its attempt and its feed entry, and the stream learns of them."""
    await seed_deliveries(store, 3, sinks=("app",))
    await settle_feed(store, 3)
    head = await store.feed_head()
    items = await store.claim_due(T0, limit=3, lease_s=30, owner="w1")
    retry = Decision.retry(T0 + 9 * SECOND, 503, "HTTP 503")
    await store.record_outcomes(
        [outcome(item, retry, up=False, error="HTTP 503", threshold=3) for item in items]
    )
    health = (await store.sink_health())["app"]
    assert (health.state, health.failures, health.opened_count) == (HealthState.PAUSED, 3, 1)
    for item in items:
        assert [(a.n, a.status) for a in await store.list_attempts(item.delivery.id)] == [(1, 503)]
    await settle_feed(store, 6)
    feed = await store.read_feed(head, FeedFilter(types=("delivery.*",)))
    assert sorted(i.data["delivery_id"] for i in feed) == sorted(i.delivery.id for i in items)
    assert {i.type for i in feed} == {"delivery.retry_scheduled"}


async def test_record_outcomes_applies_only_to_pending_deliveries(store: Store) -> None:
    """In one batch: a delivery already finished gets nothing (no attempt, no feed entry),
    and one delivery given two outcomes (its lease ran out and it was claimed again)
    takes the first only, as if they had been written one by one."""
    await seed_deliveries(store, 3, sinks=("app",))
    first, second, third = await store.claim_due(T0, limit=3, lease_s=30, owner="w1")
    delivered = Decision.delivered(200)
    await store.record_outcomes([outcome(first, delivered, up=True)])
    retry = Decision.retry(T0 + 9 * SECOND, 503, "HTTP 503")
    await store.record_outcomes(
        [
            outcome(first, retry, up=True),  # already delivered: not applied
            outcome(second, delivered, up=True),
            outcome(second, retry, up=True),  # the same delivery again: not applied
            outcome(third, retry, up=True),
        ]
    )
    states = {d.id: d.state for d in await store.list_deliveries(DeliveryFilter())}
    assert states[first.delivery.id] is DeliveryState.DELIVERED
    assert states[second.delivery.id] is DeliveryState.DELIVERED
    assert states[third.delivery.id] is DeliveryState.PENDING
    for item, statuses in ((first, [200]), (second, [200]), (third, [503])):
        attempts = await store.list_attempts(item.delivery.id)
        assert [a.status for a in attempts] == statuses
