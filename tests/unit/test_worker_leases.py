"""A delivery whose lease ran out while it waited for its sink's concurrency slot is not
sent by the worker that had claimed it: whoever re-claimed it sends it, once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import ClassVar

from handlers.sinks.base import SinkConfig
from receiver.decision import RetryPolicy
from receiver.events import DeliveryState, Event, ProviderUpdate, UpdateState, build_event, utcnow
from receiver.metrics import Metrics
from receiver.store import DeliveryFilter, Ingest
from receiver.store.sqlite import SqliteStore
from receiver.worker import DeliveryWorker

SEND_S = 0.15
LEASE_S = 0.4
EVENTS = 6  # sent one at a time: the last ones wait well past their lease


class SlowSink:
    """Takes ``SEND_S`` per event and counts what it was sent."""

    type: ClassVar[str] = "slow"

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.sent: Counter[str] = Counter()

    async def deliver(self, event: Event) -> None:
        self.sent[event.id] += 1
        await asyncio.sleep(SEND_S)

    async def aclose(self) -> None:
        return None


async def test_expired_lease_is_not_sent_twice(tmp_path: Path) -> None:
    """Six deliveries claimed at once for a sink that takes one at a time outlive their
    lease in the queue; each is still sent exactly once (before: the worker re-claimed
    the waiting ones and sent them again)."""
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 'relay.db'}")
    await store.migrate()
    sink = SlowSink(SinkConfig("slow", "slow", max_concurrency=1))
    worker = DeliveryWorker(
        store, {"slow": sink}, RetryPolicy((0.0, 1.0)), Metrics(), lease_s=LEASE_S
    )
    try:
        for n in range(EVENTS):
            update = ProviderUpdate(f"task-{n}", UpdateState.COMPLETED, image_url="https://i")
            event = build_event("apiframe", update, None)
            await store.ingest(Ingest(event, None, None, ["slow"], utcnow()))
        running = asyncio.create_task(worker.run())
        try:
            delivered = DeliveryFilter(state=DeliveryState.DELIVERED)
            async with asyncio.timeout(15):
                while len(await store.list_deliveries(delivered)) < EVENTS:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(LEASE_S + SEND_S)  # room for any late second send
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    finally:
        await store.close()
    assert len(sink.sent) == EVENTS
    assert set(sink.sent.values()) == {1}, sink.sent
