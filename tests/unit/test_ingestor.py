"""``Ingestor`` built on its own (store, providers, tokens, routes, sinks, metrics)."""

from __future__ import annotations

import pytest

from receiver.errors import Conflict, Unauthorized, UnknownProvider
from receiver.events import CallbackMode, Job, JobStatus, utcnow
from receiver.ingest import Ingestor
from receiver.metrics import Metrics
from receiver.routing import Route
from receiver.store import DeliveryFilter
from receiver.store.sqlite import SqliteStore
from receiver.tokens import CallbackTokens
from tests.helpers.fakes import FakeProvider, body

TOKENS = CallbackTokens(["test-key"], max_age_s=3600)


def ingestor(store: SqliteStore, provider: FakeProvider) -> Ingestor:
    routes = [Route(sinks=("done",), events=("upscale.completed",))]
    return Ingestor(store, {"fake": provider}, TOKENS, routes, ["done", "all"], Metrics())


async def submitted_job(store: SqliteStore) -> Job:
    job = Job(
        id="job_1",
        provider="fake",
        parent_id="p",
        action="U1",
        ref="r",
        status=JobStatus.SUBMITTED,
        callback_mode=CallbackMode.WEBHOOK,
        created_at=utcnow(),
        callback_secret="s3cret",
        provider_task_id="task-1",
    )
    created, _ = await store.create_job(job)
    return created


async def test_unknown_provider_is_404_unknown_provider(store: SqliteStore) -> None:
    with pytest.raises(UnknownProvider) as caught:
        ingestor(store, FakeProvider()).provider("nobody")
    assert (caught.value.http_status, caught.value.code) == (404, "unknown_provider")


async def test_job_callback_commits_one_routed_event_and_moves_the_job(
    store: SqliteStore,
) -> None:
    provider = FakeProvider()
    job = await submitted_job(store)
    token = TOKENS.mint(job.id, "fake")
    subject = ingestor(store, provider)
    outcome = await subject.job_callback(provider, token, {"x-secret": "s3cret"}, body("task-1"))
    again = await subject.job_callback(provider, token, {"x-secret": "s3cret"}, body("task-1"))
    assert outcome.event_id is not None
    assert not outcome.duplicate
    assert (again.event_id, again.duplicate) == (outcome.event_id, True)
    deliveries = await store.list_deliveries(DeliveryFilter(event_id=outcome.event_id))
    assert [d.sink for d in deliveries] == ["done"]
    current = await store.get_job(job.id)
    assert current is not None
    assert current.status is JobStatus.COMPLETED


async def test_job_callback_checks_secret_then_correlation(store: SqliteStore) -> None:
    provider = FakeProvider()
    job = await submitted_job(store)
    token = TOKENS.mint(job.id, "fake")
    subject = ingestor(store, provider)
    with pytest.raises(Unauthorized):
        await subject.job_callback(provider, token, {"x-secret": "wrong"}, body("task-1"))
    with pytest.raises(Conflict):
        await subject.job_callback(provider, token, {"x-secret": "s3cret"}, body("task-9"))
    assert await store.list_events(job.id) == []


async def test_confirm_by_poll_schedules_a_poll_instead_of_an_event(store: SqliteStore) -> None:
    provider = FakeProvider(confirm_by_poll=True)
    job = await submitted_job(store)
    token = TOKENS.mint(job.id, "fake")
    outcome = await ingestor(store, provider).job_callback(
        provider, token, {"x-secret": "s3cret"}, body("task-1")
    )
    assert (outcome.event_id, outcome.awaiting_confirmation) == (None, True)
    assert await store.list_events(job.id) == []
    assert [j.id for j in await store.claim_pollable(utcnow(), limit=5, lease_s=5)] == [job.id]
