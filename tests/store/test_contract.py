"""The ``Store`` contract, run against every backend (see conftest.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from receiver.decision import Decision
from receiver.errors import IdempotencyMismatch, NotFound, Unauthorized
from receiver.events import DeliveryState, Job, JobStatus, UpdateState
from receiver.store import DeliveryFilter, DeliveryOutcome, Ingest, JobLookup, Store
from tests.store.factories import SECOND, T0, make_ingest, make_job, seed_deliveries

if TYPE_CHECKING:
    from tests.store.conftest import Backend


# -- migrations and health ------------------------------------------------------------------


async def test_migrate_is_idempotent(store: Store) -> None:
    """Running migrate again changes nothing and reports the same version."""
    first = await store.migrate()
    assert first >= 1
    assert await store.migrate() == first
    await store.ping()


async def test_two_concurrent_migrations_both_succeed(backend: Backend) -> None:
    """Two stores migrating one fresh database at once both succeed with one version."""
    one, two = backend.open(), backend.open()
    versions = await asyncio.gather(one.migrate(), two.migrate())
    assert versions[0] == versions[1] >= 1
    job = make_job()
    assert (await one.create_job(job))[1]
    assert await two.get_job(job.id) == job


# -- jobs -----------------------------------------------------------------------------------


async def test_create_and_get_job_round_trips_every_field(store: Store) -> None:
    """A created job reads back equal, times tz-aware UTC to the microsecond."""
    job = make_job(
        provider_task_id="task-1",
        submitted_at=T0 + SECOND,
        finished_at=None,
        next_poll_at=T0 + 2 * SECOND,
        deadline_at=T0 + timedelta(hours=1),
        sinks=None,
    )
    created, new = await store.create_job(job)
    assert (created, new) == (job, True)
    loaded = await store.get_job(job.id)
    assert loaded == job
    assert loaded is not None
    assert loaded.callback_secret == "s3cret"
    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == timedelta(0)
    other = make_job(sinks=("a", "b"), ref=None)
    await store.create_job(other)
    assert await store.get_job(other.id) == other
    assert await store.get_job("job_missing") is None


async def test_idempotency_key_returns_the_same_job(store: Store) -> None:
    """Same key and hash return the first job; another hash raises IdempotencyMismatch."""
    first = make_job()
    assert await store.create_job(first, idempotency_key="k1", request_hash="h1") == (first, True)
    again, created = await store.create_job(make_job(), idempotency_key="k1", request_hash="h1")
    assert (again, created) == (first, False)
    with pytest.raises(IdempotencyMismatch):
        await store.create_job(make_job(), idempotency_key="k1", request_hash="h2")
    assert len(await store.list_jobs()) == 1
    assert (await store.create_job(make_job(), idempotency_key="k2", request_hash="h1"))[1]
    assert (await store.create_job(make_job()))[1]
    assert len(await store.list_jobs()) == 3


async def test_concurrent_creates_with_one_key_make_one_job(backend: Backend) -> None:
    """Many requests with one Idempotency-Key at once (over two stores) make one job."""
    one = backend.open()
    await one.migrate()
    two = backend.open()
    results = await asyncio.gather(
        *(
            (one if n % 2 else two).create_job(make_job(), idempotency_key="k", request_hash="h")
            for n in range(20)
        )
    )
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert len(await one.list_jobs()) == 1


async def test_delete_job_frees_its_idempotency_key(store: Store) -> None:
    """A deleted job is gone and its key can create a new job."""
    job = make_job()
    await store.create_job(job, idempotency_key="k", request_hash="h")
    await store.delete_job(job.id)
    assert await store.get_job(job.id) is None
    retry = make_job()
    assert await store.create_job(retry, idempotency_key="k", request_hash="other") == (retry, True)
    await store.delete_job("job_missing")


async def test_mark_submitted_moves_queued_to_submitted(store: Store) -> None:
    """mark_submitted records the task, times and poll schedule of a queued job."""
    job = make_job()
    await store.create_job(job)
    submitted = await store.mark_submitted(
        job.id,
        provider_task_id="task-1",
        submitted_at=T0 + SECOND,
        next_poll_at=T0 + 30 * SECOND,
        deadline_at=T0 + timedelta(minutes=30),
    )
    expected = replace(
        job,
        status=JobStatus.SUBMITTED,
        provider_task_id="task-1",
        submitted_at=T0 + SECOND,
        next_poll_at=T0 + 30 * SECOND,
        deadline_at=T0 + timedelta(minutes=30),
    )
    assert submitted == expected
    assert await store.get_job(job.id) == expected
    with pytest.raises(NotFound):
        await store.mark_submitted(
            "job_missing",
            provider_task_id="t",
            submitted_at=T0,
            next_poll_at=None,
            deadline_at=None,
        )


async def test_mark_submitted_never_moves_an_advanced_job_back(store: Store) -> None:
    """An early callback's progress or completion survives the later mark_submitted."""
    running, done = make_job(), make_job()
    for job in (running, done):
        await store.create_job(job)
    await store.ingest(make_ingest(running, UpdateState.PROGRESS, progress=10, task="t-run"))
    await store.ingest(make_ingest(done, UpdateState.COMPLETED, task="t-done"))
    for job, task in ((running, "t-run"), (done, "t-done")):
        await store.mark_submitted(
            job.id,
            provider_task_id=task,
            submitted_at=T0,
            next_poll_at=T0 + SECOND,
            deadline_at=None,
        )
    running_now, done_now = await store.get_job(running.id), await store.get_job(done.id)
    assert running_now is not None
    assert running_now.status is JobStatus.PROCESSING
    assert running_now.next_poll_at == T0 + SECOND
    assert done_now is not None
    assert done_now.status is JobStatus.COMPLETED
    assert done_now.next_poll_at is None
    assert done_now.finished_at == T0


async def test_find_job_by_task_returns_the_earliest_binding(store: Store) -> None:
    """Jobs are found by (provider, task); two bound to one task give the earliest."""
    late = make_job(provider_task_id="shared", created_at=T0 + SECOND)
    early = make_job(provider_task_id="shared", created_at=T0)
    elsewhere = make_job(provider="useapi", provider_task_id="shared")
    for job in (late, early, elsewhere):
        await store.create_job(job)
    assert await store.find_job_by_task("apiframe", "shared") == early
    assert await store.find_job_by_task("useapi", "shared") == elsewhere
    assert await store.find_job_by_task("apiframe", "nope") is None


async def test_list_and_count_jobs_filter(store: Store) -> None:
    """list_jobs filters by ref, status and provider, newest first, up to limit."""
    a = make_job(ref="r1", created_at=T0)
    b = make_job(ref="r1", created_at=T0 + SECOND, status=JobStatus.SUBMITTED)
    c = make_job(ref="r2", created_at=T0 + 2 * SECOND, provider="kie")
    for job in (a, b, c):
        await store.create_job(job)
    assert await store.list_jobs() == [c, b, a]
    assert await store.list_jobs(ref="r1") == [b, a]
    assert await store.list_jobs(status=JobStatus.SUBMITTED) == [b]
    assert await store.list_jobs(provider="kie") == [c]
    assert await store.list_jobs(ref="r1", provider="kie") == []
    assert await store.list_jobs(limit=2) == [c, b]
    active = {JobStatus.QUEUED, JobStatus.SUBMITTED}
    assert await store.count_jobs("apiframe", active) == 2
    assert await store.count_jobs("apiframe", {JobStatus.QUEUED}) == 1
    assert await store.count_jobs("kie", {JobStatus.SUBMITTED}) == 0
    assert await store.count_jobs("apiframe", ()) == 0


# -- ingest ---------------------------------------------------------------------------------


async def test_ingest_commits_event_deliveries_and_job(store: Store) -> None:
    """An ingest stores the event, one pending delivery per sink, and advances the job."""
    job = make_job(next_poll_at=T0 + SECOND)
    await store.create_job(job)
    record = make_ingest(job, UpdateState.COMPLETED, sinks=("team", "archive", "team"))
    assert await store.ingest(record)
    assert await store.get_event(record.event.id) == record.event
    assert await store.list_events(job.id) == [record.event]
    deliveries = await store.list_deliveries(DeliveryFilter(event_id=record.event.id))
    assert sorted(d.sink for d in deliveries) == ["archive", "team"]
    for delivery in deliveries:
        assert delivery.state is DeliveryState.PENDING
        assert delivery.attempts == 0
        assert delivery.next_attempt_at == T0
        assert delivery.job_id == job.id
        assert (delivery.created_at, delivery.updated_at) == (T0, T0)
        assert (delivery.last_status, delivery.last_error) == (None, None)
        assert await store.get_delivery(delivery.id) == delivery
    assert await store.get_delivery("dlv_missing") is None
    assert await store.get_event("evt_missing") is None
    loaded = await store.get_job(job.id)
    assert loaded == replace(
        job,
        status=JobStatus.COMPLETED,
        provider_task_id="task-1",
        finished_at=T0,
        next_poll_at=None,
    )


async def test_duplicate_ingest_is_a_no_op(store: Store) -> None:
    """The same event twice is stored once with one delivery per sink."""
    job = make_job()
    await store.create_job(job)
    record = make_ingest(job)
    assert await store.ingest(record)
    assert not await store.ingest(record)
    assert not await store.ingest(replace(record, sinks=("team", "other"), now=T0 + SECOND))
    assert len(await store.list_events(job.id)) == 1
    assert len(await store.list_deliveries(DeliveryFilter(job_id=job.id))) == 2


async def test_concurrent_ingest_of_one_event_makes_one_event(backend: Backend) -> None:
    """Fifty coroutines over two stores ingesting one event commit it exactly once."""
    one = backend.open()
    await one.migrate()
    two = backend.open()
    job = make_job()
    await one.create_job(job)
    record = make_ingest(job)
    results = await asyncio.gather(*((one if n % 2 else two).ingest(record) for n in range(50)))
    assert sum(results) == 1
    assert len(await one.list_events(job.id)) == 1
    assert len(await two.list_deliveries(DeliveryFilter(event_id=record.event.id))) == 2


async def test_job_status_only_moves_forward(store: Store) -> None:
    """A late progress after completion is recorded but does not move the job back."""
    job = make_job()
    await store.create_job(job)
    p40 = make_ingest(job, UpdateState.PROGRESS, progress=40)
    done = make_ingest(job, UpdateState.COMPLETED, now=T0 + SECOND)
    late = make_ingest(job, UpdateState.PROGRESS, progress=80, now=T0 + 2 * SECOND)
    failed = make_ingest(job, UpdateState.FAILED, now=T0 + 3 * SECOND)
    assert await store.ingest(p40)
    processing = await store.get_job(job.id)
    assert processing is not None
    assert processing.status is JobStatus.PROCESSING
    assert processing.finished_at is None
    for record in (done, late, failed):
        assert await store.ingest(record)
    final = await store.get_job(job.id)
    assert final is not None
    assert final.status is JobStatus.COMPLETED
    assert final.finished_at == T0 + SECOND
    assert [e.id for e in await store.list_events(job.id)] == [
        p40.event.id,
        done.event.id,
        late.event.id,
        failed.event.id,
    ]


async def test_ingest_for_looks_up_plans_and_commits_in_one_call(store: Store) -> None:
    """``ingest_for`` finds the job by id, by task, or by the echoed reference (for that
    provider only), hands it to the plan and commits what the plan returns."""
    job = make_job(provider_task_id="task-7")
    await store.create_job(job)
    seen: list[Job | None] = []

    def plan(found: Job | None) -> Ingest:
        seen.append(found)
        return make_ingest(found, task="task-7")

    got, record, inserted = await store.ingest_for(JobLookup(job_id=job.id), plan)
    assert (got, inserted) == (job, True)
    assert record is not None
    assert await store.get_event(record.event.id) == record.event
    assert (await store.get_job(job.id)).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    by_task = await store.ingest_for(JobLookup(None, "apiframe", "task-7"), plan)
    assert by_task[0] is not None
    assert (by_task[0].id, by_task[2]) == (job.id, False)  # same event: a duplicate
    by_ref = JobLookup(None, "apiframe", "other-task", correlation_id=job.id)
    assert (await store.ingest_for(by_ref, lambda found: None))[0] == by_task[0]
    wrong_provider = JobLookup(None, "kie", "other-task", correlation_id=job.id)
    assert await store.ingest_for(wrong_provider, lambda found: None) == (None, None, False)
    missing = JobLookup(job_id="job_missing")
    assert await store.ingest_for(missing, lambda found: None) == (None, None, False)
    assert [found.id if found else None for found in seen] == [job.id, job.id]


async def test_ingest_for_writes_nothing_when_the_plan_refuses(store: Store) -> None:
    """A plan that raises (a bad signature …) or returns None leaves no trace."""
    job = make_job(provider_task_id="task-8")
    await store.create_job(job)

    def refuse(found: Job | None) -> Ingest:
        raise Unauthorized("wrong secret")

    with pytest.raises(Unauthorized):
        await store.ingest_for(JobLookup(job_id=job.id), refuse)
    assert await store.ingest_for(JobLookup(job_id=job.id), lambda found: None) == (
        job,
        None,
        False,
    )
    assert await store.list_events(job.id) == []
    assert await store.get_job(job.id) == job


async def test_ingest_keeps_an_existing_provider_task_id(store: Store) -> None:
    """Ingest sets provider_task_id only when the job has none, even without a status."""
    job = make_job(provider_task_id="original", status=JobStatus.SUBMITTED)
    await store.create_job(job)
    await store.ingest(make_ingest(job, UpdateState.PROGRESS, progress=5, task="other"))
    loaded = await store.get_job(job.id)
    assert loaded is not None
    assert (loaded.provider_task_id, loaded.status) == ("original", JobStatus.PROCESSING)
    bare = make_job()
    await store.create_job(bare)
    record = make_ingest(bare, UpdateState.PROGRESS, progress=1, task="learned")
    await store.ingest(replace(record, job_status=None))
    await store.ingest(replace(make_ingest(bare, task="learned"), job_status=JobStatus.QUEUED))
    learned = await store.get_job(bare.id)
    assert learned is not None
    assert (learned.provider_task_id, learned.status) == ("learned", JobStatus.QUEUED)


async def test_ingest_without_job_or_sinks(store: Store) -> None:
    """Account-level events need no job, and an event routed nowhere is still stored."""
    orphan = make_ingest(None, task="orphan")
    assert await store.ingest(orphan)
    assert await store.get_event(orphan.event.id) == orphan.event
    assert len(await store.list_deliveries(DeliveryFilter(event_id=orphan.event.id))) == 2
    job = make_job()
    await store.create_job(job)
    quiet = make_ingest(job, sinks=())
    assert await store.ingest(quiet)
    assert await store.list_events(job.id) == [quiet.event]
    assert await store.list_deliveries(DeliveryFilter(job_id=job.id)) == []
    loaded = await store.get_job(job.id)
    assert loaded is not None
    assert loaded.status is JobStatus.COMPLETED


# -- deliveries -----------------------------------------------------------------------------


async def test_claim_due_leases_due_deliveries_with_their_events(store: Store) -> None:
    """claim_due returns due pending deliveries in due order with the event they carry."""
    job = make_job()
    await store.create_job(job)
    first = make_ingest(job, UpdateState.PROGRESS, progress=10, sinks=("team",))
    second = make_ingest(job, sinks=("team",), now=T0 + SECOND)
    future = make_ingest(None, task="future", sinks=("team",), now=T0 + 60 * SECOND)
    for record in (second, first, future):
        await store.ingest(record)
    claimed = await store.claim_due(T0 + SECOND, limit=10, lease_s=30, owner="w1")
    assert [c.event for c in claimed] == [first.event, second.event]
    assert [c.delivery.event_id for c in claimed] == [first.event.id, second.event.id]
    assert all(c.delivery.state is DeliveryState.PENDING for c in claimed)
    assert await store.claim_due(T0 + SECOND, limit=10, lease_s=30, owner="w2") == []


async def test_claim_due_honours_limit_and_excluded_sinks(store: Store) -> None:
    """claim_due takes at most limit deliveries and none for an excluded sink."""
    await seed_deliveries(store, 3, sinks=("team", "archive"))
    claimed = await store.claim_due(T0, limit=2, lease_s=30, owner="w", exclude_sinks={"team"})
    assert [c.delivery.sink for c in claimed] == ["archive", "archive"]
    rest = await store.claim_due(T0, limit=10, lease_s=30, owner="w", exclude_sinks=["team"])
    assert [c.delivery.sink for c in rest] == ["archive"]
    teams = await store.claim_due(T0, limit=10, lease_s=30, owner="w")
    assert [c.delivery.sink for c in teams] == ["team"] * 3


async def test_expired_lease_is_claimed_again(store: Store) -> None:
    """A claimer that never reports loses its lease after lease_s to another claimer."""
    await seed_deliveries(store, 1)
    (taken,) = await store.claim_due(T0, limit=5, lease_s=10, owner="dead-worker")
    assert await store.claim_due(T0 + 9 * SECOND, limit=5, lease_s=10, owner="w2") == []
    (again,) = await store.claim_due(T0 + 10 * SECOND, limit=5, lease_s=10, owner="w2")
    assert again.delivery.id == taken.delivery.id


async def test_concurrent_claimers_never_share_a_delivery(backend: Backend) -> None:
    """Claimers racing over two stores get disjoint deliveries that cover the backlog."""
    one = backend.open()
    await one.migrate()
    two = backend.open()
    await seed_deliveries(one, 30)
    batches = await asyncio.gather(
        *(
            (one if n % 2 else two).claim_due(T0, limit=4, lease_s=30, owner=f"w{n}")
            for n in range(10)
        )
    )
    ids = [c.delivery.id for batch in batches for c in batch]
    assert len(ids) == len(set(ids)) == 30
    assert all(len(batch) <= 4 for batch in batches)


async def test_mark_delivered_records_the_attempt(store: Store) -> None:
    """mark_delivered counts one attempt, keeps the status, and drops the lease."""
    await seed_deliveries(store, 1)
    (due,) = await store.claim_due(T0, limit=1, lease_s=30, owner="w")
    await store.mark_delivered(due.delivery.id, status=204, now=T0 + SECOND)
    delivered = await store.get_delivery(due.delivery.id)
    assert delivered is not None
    assert delivered.state is DeliveryState.DELIVERED
    assert (delivered.attempts, delivered.last_status, delivered.last_error) == (1, 204, None)
    assert delivered.next_attempt_at is None
    assert delivered.updated_at == T0 + SECOND
    assert await store.claim_due(T0 + timedelta(hours=1), limit=5, lease_s=30, owner="w") == []


async def test_record_outcomes_writes_many_in_one_call(store: Store) -> None:
    """One ``record_outcomes`` call records every kind of outcome for its own delivery:
    delivered, retry, dead and released, each as ``record_outcome`` would."""
    await seed_deliveries(store, 4)
    claimed = await store.claim_due(T0, limit=4, lease_s=30, owner="w")
    ids = [c.delivery.id for c in claimed]
    later = T0 + 5 * SECOND
    decisions = [
        Decision.delivered(200),
        Decision.retry(later, 503, "unavailable"),
        Decision.dead(410, "gone"),
        Decision.released(later),
    ]
    await store.record_outcomes(
        [DeliveryOutcome(i, d, T0 + SECOND) for i, d in zip(ids, decisions, strict=True)]
    )
    got = [await store.get_delivery(i) for i in ids]
    assert all(d is not None for d in got)
    states = [(d.state, d.attempts, d.last_status) for d in got if d is not None]
    assert states == [
        (DeliveryState.DELIVERED, 1, 200),
        (DeliveryState.PENDING, 1, 503),
        (DeliveryState.DEAD, 1, 410),
        (DeliveryState.PENDING, 0, None),
    ]
    due_later = await store.claim_due(later, limit=5, lease_s=30, owner="w2")
    assert sorted(c.delivery.id for c in due_later) == sorted([ids[1], ids[3]])
    await store.record_outcomes([])  # nothing to do is fine


async def test_schedule_retry_counts_and_reschedules(store: Store) -> None:
    """schedule_retry counts an attempt and makes the delivery due again later."""
    await seed_deliveries(store, 1)
    (due,) = await store.claim_due(T0, limit=1, lease_s=30, owner="w")
    later = T0 + 5 * SECOND
    await store.schedule_retry(
        due.delivery.id, next_attempt_at=later, status=503, error="unavailable", now=T0
    )
    retrying = await store.get_delivery(due.delivery.id)
    assert retrying is not None
    assert retrying.state is DeliveryState.PENDING
    assert (retrying.attempts, retrying.last_status, retrying.last_error) == (1, 503, "unavailable")
    assert retrying.next_attempt_at == later
    assert await store.claim_due(later - SECOND, limit=5, lease_s=30, owner="w") == []
    (again,) = await store.claim_due(later, limit=5, lease_s=30, owner="w")
    await store.schedule_retry(
        again.delivery.id, next_attempt_at=later, status=None, error="timeout", now=later
    )
    twice = await store.get_delivery(due.delivery.id)
    assert twice is not None
    assert (twice.attempts, twice.last_status) == (2, None)


async def test_mark_dead_dead_letters(store: Store) -> None:
    """mark_dead counts the attempt and takes the delivery out of the queue."""
    await seed_deliveries(store, 1)
    (due,) = await store.claim_due(T0, limit=1, lease_s=30, owner="w")
    await store.mark_dead(due.delivery.id, status=410, error="gone", now=T0 + SECOND)
    dead = await store.get_delivery(due.delivery.id)
    assert dead is not None
    assert (dead.state, dead.attempts, dead.last_status, dead.last_error) == (
        DeliveryState.DEAD,
        1,
        410,
        "gone",
    )
    assert await store.claim_due(T0 + timedelta(hours=1), limit=5, lease_s=30, owner="w") == []
    assert await store.backlog_by_sink() == {}


async def test_release_puts_a_delivery_back_untried(store: Store) -> None:
    """release drops the lease and reschedules without counting an attempt."""
    await seed_deliveries(store, 1)
    (due,) = await store.claim_due(T0, limit=1, lease_s=300, owner="w")
    await store.release(due.delivery.id, next_attempt_at=T0 + 2 * SECOND)
    released = await store.get_delivery(due.delivery.id)
    assert released is not None
    assert (released.attempts, released.next_attempt_at) == (0, T0 + 2 * SECOND)
    assert await store.claim_due(T0 + SECOND, limit=5, lease_s=300, owner="w") == []
    (again,) = await store.claim_due(T0 + 2 * SECOND, limit=5, lease_s=300, owner="w2")
    assert again.delivery.id == due.delivery.id


async def test_replay_requeues_finished_deliveries(store: Store) -> None:
    """replay makes matching dead or delivered deliveries pending, due now, attempts reset."""
    await seed_deliveries(store, 3, sinks=("team", "archive"))
    claimed = await store.claim_due(T0, limit=10, lease_s=30, owner="w")
    by_sink: dict[str, list[str]] = {}
    for c in claimed:
        by_sink.setdefault(c.delivery.sink, []).append(c.delivery.id)
    dead_team, delivered_team, pending_team = by_sink["team"]
    await store.mark_dead(dead_team, status=500, error="boom", now=T0)
    await store.mark_delivered(delivered_team, status=200, now=T0)
    for delivery_id in by_sink["archive"]:
        await store.mark_dead(delivery_id, status=None, error="down", now=T0)
    await store.release(pending_team, next_attempt_at=T0)

    later = T0 + timedelta(minutes=5)
    assert await store.replay(DeliveryFilter(delivery_id=dead_team), later) == 1
    replayed = await store.get_delivery(dead_team)
    assert replayed is not None
    assert (replayed.state, replayed.attempts) == (DeliveryState.PENDING, 0)
    assert (replayed.next_attempt_at, replayed.updated_at) == (later, later)
    assert await store.replay(DeliveryFilter(delivery_id=pending_team), later) == 0
    assert await store.replay(DeliveryFilter(state=DeliveryState.PENDING), later) == 0
    assert await store.replay(DeliveryFilter(sink="team"), later) == 1
    assert await store.replay(DeliveryFilter(sink="archive", state=DeliveryState.DEAD), later) == 3
    assert await store.replay(DeliveryFilter(), later) == 0
    again = await store.claim_due(later, limit=10, lease_s=30, owner="w")
    assert len(again) == 6
    event_id = again[0].event.id
    await store.mark_delivered(again[0].delivery.id, status=200, now=later)
    assert await store.replay(DeliveryFilter(event_id=event_id, job_id="job_other"), later) == 0
    assert await store.replay(DeliveryFilter(event_id=event_id), later) == 1


async def test_list_deliveries_filters(store: Store) -> None:
    """list_deliveries filters by id, state, sink, job and event, newest first."""
    job = make_job()
    await store.create_job(job)
    older = make_ingest(job, UpdateState.PROGRESS, progress=50)
    newer = make_ingest(job)
    await store.ingest(older)
    await store.ingest(newer)
    await seed_deliveries(store, 1, sinks=("team",))
    everything = await store.list_deliveries(DeliveryFilter())
    assert len(everything) == 5
    mine = await store.list_deliveries(DeliveryFilter(job_id=job.id))
    assert [d.event_id for d in mine] == [newer.event.id] * 2 + [older.event.id] * 2
    team = await store.list_deliveries(DeliveryFilter(sink="team"))
    assert len(team) == 3
    one = everything[0]
    assert await store.list_deliveries(DeliveryFilter(delivery_id=one.id)) == [one]
    await store.mark_dead(one.id, status=None, error="x", now=T0)
    dead = await store.list_deliveries(DeliveryFilter(state=DeliveryState.DEAD))
    assert [d.id for d in dead] == [one.id]
    assert len(await store.list_deliveries(DeliveryFilter(state=DeliveryState.PENDING))) == 4
    assert len(await store.list_deliveries(DeliveryFilter(), limit=2)) == 2
    assert await store.list_deliveries(DeliveryFilter(event_id="evt_none")) == []


async def test_backlog_and_next_due(store: Store) -> None:
    """backlog_by_sink counts pending deliveries; next_due_at is the earliest claimable time."""
    assert await store.backlog_by_sink() == {}
    assert await store.next_due_at() is None
    await store.ingest(make_ingest(None, task="a", sinks=("team", "archive"), now=T0 + SECOND))
    await store.ingest(make_ingest(None, task="b", sinks=("team",), now=T0 + 2 * SECOND))
    assert await store.backlog_by_sink() == {"team": 2, "archive": 1}
    assert await store.next_due_at() == T0 + SECOND
    claimed = await store.claim_due(T0 + SECOND, limit=5, lease_s=60, owner="w")
    assert len(claimed) == 2
    assert await store.next_due_at() == T0 + 2 * SECOND
    for c in claimed:
        await store.mark_delivered(c.delivery.id, status=200, now=T0 + SECOND)
    assert await store.backlog_by_sink() == {"team": 1}
    (last,) = await store.claim_due(T0 + 2 * SECOND, limit=5, lease_s=60, owner="w")
    assert await store.next_due_at() == T0 + 62 * SECOND  # leased: claimable when it expires
    await store.mark_delivered(last.delivery.id, status=200, now=T0)
    assert await store.next_due_at() is None
    assert await store.backlog_by_sink() == {}


# -- polling --------------------------------------------------------------------------------


async def test_claim_pollable_leases_due_active_jobs(store: Store) -> None:
    """claim_pollable returns due, unfinished, unleased jobs and leases them for lease_s."""
    due = make_job(status=JobStatus.SUBMITTED, next_poll_at=T0)
    earlier = make_job(status=JobStatus.SUBMITTED, next_poll_at=T0 - SECOND)
    later = make_job(status=JobStatus.SUBMITTED, next_poll_at=T0 + 10 * SECOND)
    never = make_job(status=JobStatus.SUBMITTED)
    for job in (due, earlier, later, never):
        await store.create_job(job)
    assert await store.claim_pollable(T0, limit=10, lease_s=5) == [earlier, due]
    assert await store.claim_pollable(T0 + 4 * SECOND, limit=10, lease_s=5) == []
    again = await store.claim_pollable(T0 + 5 * SECOND, limit=1, lease_s=5)
    assert again == [earlier]
    await store.set_next_poll(earlier.id, T0 + 20 * SECOND)
    await store.set_next_poll(due.id, None)
    assert await store.claim_pollable(T0 + 10 * SECOND, limit=10, lease_s=5) == [later]
    await store.set_next_poll(later.id, None)
    (rescheduled,) = await store.claim_pollable(T0 + 20 * SECOND, limit=10, lease_s=5)
    assert rescheduled.id == earlier.id
    assert rescheduled.next_poll_at == T0 + 20 * SECOND
    stopped = await store.get_job(due.id)
    assert stopped is not None
    assert stopped.next_poll_at is None


async def test_finished_jobs_are_never_polled(store: Store) -> None:
    """A terminal ingest stops polling, and set_next_poll cannot restart a finished job."""
    job = make_job(status=JobStatus.SUBMITTED, next_poll_at=T0)
    await store.create_job(job)
    (_claimed,) = await store.claim_pollable(T0, limit=5, lease_s=5)
    await store.ingest(make_ingest(job, UpdateState.FAILED))
    await store.set_next_poll(job.id, T0 + SECOND)
    loaded = await store.get_job(job.id)
    assert loaded is not None
    assert loaded.next_poll_at is None
    assert await store.claim_pollable(T0 + timedelta(hours=1), limit=5, lease_s=5) == []


# -- wake-ups -------------------------------------------------------------------------------


async def test_wait_for_work_times_out_when_idle(store: Store) -> None:
    """With nothing committed, wait_for_work returns after its timeout."""
    started = time.monotonic()
    await store.wait_for_work(0.05)
    assert 0.04 <= time.monotonic() - started < 1


async def _quiet(store: Store) -> None:
    """Until a wait times out: the wake-ups of the set-up itself are spent (PostgreSQL
    announces an ingest after its commit, so its NOTIFY may still be on the way)."""
    for _ in range(50):
        started = time.monotonic()
        await store.wait_for_work(0.03)
        if time.monotonic() - started >= 0.03:
            return
    raise AssertionError("the store kept waking with nothing new committed")


@pytest.mark.parametrize("trigger", ["ingest", "replay", "release", "set_next_poll"])
async def test_wait_for_work_wakes_on_new_work(store: Store, trigger: str) -> None:
    """A waiter wakes at once when this store commits new deliveries or a poll."""
    await seed_deliveries(store, 2)
    finished, leased = await store.claim_due(T0, limit=2, lease_s=30, owner="w")
    await store.mark_delivered(finished.delivery.id, status=200, now=T0)
    job = make_job(status=JobStatus.SUBMITTED)
    await store.create_job(job)
    await _quiet(store)
    waiter = asyncio.create_task(store.wait_for_work(10))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    started = time.monotonic()
    if trigger == "ingest":
        await store.ingest(make_ingest(None, task="new"))
    elif trigger == "replay":
        await store.replay(DeliveryFilter(delivery_id=finished.delivery.id), T0)
    elif trigger == "release":
        await store.release(leased.delivery.id, next_attempt_at=T0)
    else:
        await store.set_next_poll(job.id, T0)
    await asyncio.wait_for(waiter, 2)
    assert time.monotonic() - started < 1


async def test_wait_for_work_remembers_work_that_arrived_while_busy(store: Store) -> None:
    """Work committed between two waits makes the next wait return at once."""
    await store.wait_for_work(0.001)
    await seed_deliveries(store, 1)
    started = time.monotonic()
    await store.wait_for_work(10)
    assert time.monotonic() - started < 1
