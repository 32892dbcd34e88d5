"""``DeliveryWorker`` built on its own (store, sinks, policy, metrics): each claim ends in
the one store call its decision names, with the status the sink really had."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from handlers.sinks.base import DeliveryNote, SinkAnswer
from receiver.decision import RetryPolicy
from receiver.errors import DeliveryFailed
from receiver.events import (
    Delivery,
    DeliveryState,
    Event,
    ProviderUpdate,
    UpdateState,
    build_event,
    utcnow,
)
from receiver.feed import FeedFilter
from receiver.metrics import Metrics
from receiver.sink_health import HealthState
from receiver.store import DeliveryFilter, Ingest
from receiver.store.sqlite import SqliteStore
from receiver.worker import DeliveryWorker
from tests.helpers.fakes import ScriptedSink

POLICY = RetryPolicy((0.0, 30.0, 60.0), jitter=0.0)


async def enqueue(store: SqliteStore, *sinks: str, task: str = "t1") -> str:
    update = ProviderUpdate(task, UpdateState.COMPLETED, image_url="https://i")
    event = build_event("fake", update, None)
    await store.ingest(Ingest(event, None, None, list(sinks), utcnow()))
    return event.id


async def only(store: SqliteStore) -> Delivery:
    [delivery] = await store.list_deliveries(DeliveryFilter())
    return delivery


async def test_delivered_keeps_the_sinks_status_or_none(store: SqliteStore) -> None:
    """An HTTP-like sink's 204 is recorded; a sink without a status records None (no
    invented 200)."""
    http, file = ScriptedSink("http", 204), ScriptedSink("file", None)
    await enqueue(store, "http", "file")
    worker = DeliveryWorker(store, {"http": http, "file": file}, POLICY, Metrics())
    assert await worker.drain(5) == 2
    statuses = {
        d.sink: (d.state, d.last_status) for d in await store.list_deliveries(DeliveryFilter())
    }
    assert statuses == {
        "http": (DeliveryState.DELIVERED, 204),
        "file": (DeliveryState.DELIVERED, None),
    }


async def test_retryable_failure_is_rescheduled_on_the_policy(store: SqliteStore) -> None:
    sink = ScriptedSink("hook", DeliveryFailed("HTTP 503: busy", status=503))
    await enqueue(store, "hook")
    before = utcnow()
    await DeliveryWorker(store, {"hook": sink}, POLICY, Metrics()).drain(5)
    delivery = await only(store)
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == (
        DeliveryState.PENDING,
        1,
        503,
        "HTTP 503: busy",
    )
    assert 29 <= (delivery.next_attempt_at - before).total_seconds() <= 31


async def test_permanent_failure_is_dead_and_the_sink_counts_as_up(store: SqliteStore) -> None:
    sink = ScriptedSink("hook", DeliveryFailed("HTTP 410: gone", status=410))
    await enqueue(store, "hook")
    worker = DeliveryWorker(store, {"hook": sink}, POLICY, Metrics())
    await worker.drain(5)
    delivery = await only(store)
    assert (delivery.state, delivery.last_status, delivery.last_error) == (
        DeliveryState.DEAD,
        410,
        "HTTP 410: gone",
    )
    health = (await store.sink_health())["hook"]  # shared: every worker sees it
    assert (health.state, health.failures, health.last_error) == (
        HealthState.OK,
        0,
        "HTTP 410: gone",
    )


async def test_throttled_is_released_without_an_attempt(store: SqliteStore) -> None:
    throttled = DeliveryFailed("paced", permanent=False, retry_after_s=30.0, throttled=True)
    await enqueue(store, "hook")
    await DeliveryWorker(store, {"hook": ScriptedSink("hook", throttled)}, POLICY, Metrics()).drain(
        5
    )
    delivery = await only(store)
    assert (delivery.state, delivery.attempts, delivery.last_error) == (
        DeliveryState.PENDING,
        0,
        None,
    )


async def test_an_unconfigured_sink_is_dead_letered(store: SqliteStore) -> None:
    await enqueue(store, "gone")
    await DeliveryWorker(store, {}, POLICY, Metrics()).drain(5)
    delivery = await only(store)
    assert (delivery.state, delivery.last_error) == (
        DeliveryState.DEAD,
        "sink 'gone' is no longer configured",
    )


async def test_failures_open_the_circuit_and_pause_the_backlog(store: SqliteStore) -> None:
    """Two failures in a row pause the sink: the third delivery is not even claimed."""
    sink = ScriptedSink("hook", DeliveryFailed("timed out"), circuit_failure_threshold=2)
    policy = RetryPolicy((0.0, 0.0, 0.0, 0.0), jitter=0.0)
    worker = DeliveryWorker(store, {"hook": sink}, policy, Metrics(), batch=1)
    for n in range(3):
        await enqueue(store, "hook", task=f"t{n}")
    await worker.drain(5)
    assert (await store.sink_health())["hook"].state is HealthState.PAUSED
    assert worker.board.state("hook") is HealthState.PAUSED
    assert sum(sink.sent.values()) == 2
    assert all(
        d.state is DeliveryState.PENDING for d in await store.list_deliveries(DeliveryFilter())
    )


async def test_a_delivery_note_is_kept_counted_and_logged(store: SqliteStore) -> None:
    """A sink that took the event but skipped part of it on purpose (the S3 sink's
    refused image) ends delivered, with the note as ``last_error`` and one count in
    ``relay_delivery_notes_total`` under its reason."""
    note = DeliveryNote(None, "image_refused_loopback", "image not copied: loopback")
    metrics = Metrics()
    await enqueue(store, "archive")
    worker = DeliveryWorker(store, {"archive": ScriptedSink("archive", note)}, POLICY, metrics)
    with capture_logs() as logs:
        await worker.drain(5)
    delivery = await only(store)
    assert (delivery.state, delivery.last_status, delivery.last_error) == (
        DeliveryState.DELIVERED,
        None,
        "image not copied: loopback",
    )
    sample = metrics.registry.get_sample_value(
        "relay_delivery_notes_total", {"sink": "archive", "reason": "image_refused_loopback"}
    )
    assert sample == 1.0
    [line] = [entry for entry in logs if entry["event"] == "delivery.delivered"]
    assert line["note"] == "image not copied: loopback"


async def test_a_429_pauses_the_sink_and_uses_no_attempt(store: SqliteStore) -> None:
    """Rate limited with Retry-After 0.3 s on a schedule whose next try is 30 s away:
    the delivery comes back after 0.3 s, not 30 s, still at zero attempts used; the
    other delivery to that sink is not sent during the pause."""
    limited = DeliveryFailed("rate_limited", status=429, retry_after_s=0.3)
    sink = ScriptedSink("team", limited, 200, 200)
    metrics = Metrics()
    worker = DeliveryWorker(store, {"team": sink}, POLICY, metrics, batch=1)
    for n in range(2):
        await enqueue(store, "team", task=f"t{n}")
    started = time.monotonic()
    sent_at: list[float] = []
    original = sink.deliver

    async def timed(event: Event) -> SinkAnswer | DeliveryNote | int | None:
        sent_at.append(time.monotonic() - started)
        return await original(event)

    sink.deliver = timed  # type: ignore[method-assign]
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(5):
            while (
                len(await store.list_deliveries(DeliveryFilter(state=DeliveryState.DELIVERED))) < 2
            ):
                await asyncio.sleep(0.02)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    deliveries = await store.list_deliveries(DeliveryFilter())
    assert [(d.state, d.attempts) for d in deliveries] == [(DeliveryState.DELIVERED, 1)] * 2
    assert len(sent_at) == 3
    # the 429 is on the record as an attempt (it went out), though it used none
    rows = [a for d in deliveries for a in await store.list_attempts(d.id)]
    assert sorted(a.status or 0 for a in rows) == [200, 200, 429]
    assert sent_at[1] >= 0.29  # nothing went out during the pause
    assert time.monotonic() - started < 5  # not the schedule's 30 s
    sample = metrics.registry.get_sample_value(
        "relay_delivery_attempts_total", {"sink": "team", "outcome": "rate_limited"}
    )
    assert sample == 1.0


async def test_each_attempt_is_recorded_with_a_redacted_answer(store: SqliteStore) -> None:
    """A 503 whose body (and message) echo the sink's secret, then a success: two
    attempt rows and two feed entries, the secret nowhere."""
    secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    echo = f"busy; token {secret}".encode()
    failure = DeliveryFailed(f"HTTP 503: busy {secret}", status=503, response_body=echo)
    sink = ScriptedSink(
        "hook",
        failure,
        SinkAnswer(201, b'{"stored":true}'),
        options={"url": "https://hooks.example.com/in?key=abcdef123", "secret": secret},
    )
    policy = RetryPolicy((0.0, 0.0), jitter=0.0)
    await enqueue(store, "hook")
    head = await store.feed_head()
    await DeliveryWorker(store, {"hook": sink}, policy, Metrics()).drain(5)
    delivery = await only(store)
    assert (delivery.state, delivery.last_status) == (DeliveryState.DELIVERED, 201)
    first, second = await store.list_attempts(delivery.id)
    assert (first.n, first.status, second.n, second.status) == (1, 503, 2, 201)
    assert first.host == second.host == "hooks.example.com"
    assert first.error == "HTTP 503: busy [redacted]"
    assert first.response_excerpt == "busy; token [redacted]"
    assert second.error is None
    assert second.response_excerpt == '{"stored":true}'
    items = await store.read_feed(head, FeedFilter())
    assert [i.type for i in items] == ["delivery.retry_scheduled", "delivery.delivered"]
    assert secret not in repr(items)
    assert secret not in repr(await store.list_deliveries(DeliveryFilter()))
