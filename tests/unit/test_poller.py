"""``Poller`` built on its own (store, providers, record, dispatch, metrics)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from receiver.events import (
    CallbackMode,
    ErrorCode,
    Job,
    JobStatus,
    ProviderUpdate,
    UpdateState,
    utcnow,
)
from receiver.ingest import Outcome
from receiver.metrics import Metrics
from receiver.poller import Poller
from receiver.store.sqlite import SqliteStore
from tests.helpers.fakes import FakeProvider


class Recorded:
    def __init__(self) -> None:
        self.updates: list[ProviderUpdate] = []
        self.arrived = asyncio.Event()

    async def __call__(self, provider: str, update: ProviderUpdate, job: Job | None) -> Outcome:
        self.updates.append(update)
        self.arrived.set()
        return Outcome(event_id="evt_x")


async def no_queue() -> int:
    return 0


def job(**changes: object) -> Job:
    now = utcnow()
    values: dict[str, object] = {
        "id": "job_1",
        "provider": "fake",
        "parent_id": "p",
        "action": "U1",
        "ref": None,
        "status": JobStatus.SUBMITTED,
        "callback_mode": CallbackMode.WEBHOOK,
        "created_at": now,
        "provider_task_id": "task-1",
        "submitted_at": now,
        "next_poll_at": now,
        "deadline_at": now + timedelta(hours=1),
        **changes,
    }
    return Job(**values)  # type: ignore[arg-type]


async def test_poll_due_records_the_answer_and_reschedules(store: SqliteStore) -> None:
    provider = FakeProvider(poll_interval_s=15.0)
    record = Recorded()
    await store.create_job(job())
    poller = Poller(store, {"fake": provider}, record, no_queue, Metrics())
    assert await poller.poll_due() == 1
    assert provider.polled == ["task-1"]
    assert [u.state for u in record.updates] == [UpdateState.PROGRESS]
    current = await store.get_job("job_1")
    assert current is not None
    assert current.next_poll_at is not None
    assert current.next_poll_at > utcnow() + timedelta(seconds=10)
    assert await poller.poll_due() == 0  # not due again yet


async def test_past_deadline_ends_as_timeout(store: SqliteStore) -> None:
    record = Recorded()
    await store.create_job(job(deadline_at=utcnow() - timedelta(seconds=1)))
    poller = Poller(store, {"fake": FakeProvider()}, record, no_queue, Metrics())
    await poller.poll_due()
    [update] = record.updates
    assert (update.state, update.error_code) == (UpdateState.FAILED, ErrorCode.TIMEOUT)


async def test_run_wakes_on_the_stores_signal_not_its_tick(store: SqliteStore) -> None:
    """With a 60 s tick, a poll scheduled through the store is polled at once."""
    provider = FakeProvider()
    record = Recorded()
    await store.create_job(job(next_poll_at=None))
    rounds = 0

    async def dispatch() -> int:
        nonlocal rounds
        rounds += 1
        return 0

    poller = Poller(store, {"fake": provider}, record, dispatch, Metrics(), tick_s=60.0)
    running = asyncio.create_task(poller.run())
    try:
        async with asyncio.timeout(5):
            while rounds < 1:
                await asyncio.sleep(0.01)
        await store.set_next_poll("job_1", utcnow())
        async with asyncio.timeout(5):
            await record.arrived.wait()
        assert provider.polled == ["task-1"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
