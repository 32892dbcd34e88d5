"""``Submitter`` built on its own: validation, submission, and the queue behind a
provider's ``max_jobs`` with the back-off it owns."""

from __future__ import annotations

import pytest

from handlers.providers import SubmitResult, SubmitSpec
from receiver.errors import ProviderAtCapacity, UnknownProvider, UnknownSink, UnsupportedAction
from receiver.events import Job, JobStatus, ProviderUpdate
from receiver.ingest import Outcome
from receiver.metrics import Metrics
from receiver.store.sqlite import SqliteStore
from receiver.submission import Submitter
from receiver.tokens import CallbackTokens
from tests.helpers.fakes import FakeProvider

TOKENS = CallbackTokens(["test-key"], max_age_s=3600)
BODY = {"provider": "fake", "parent_id": "grid", "action": "U2"}


class Recorded:
    def __init__(self) -> None:
        self.updates: list[tuple[str, ProviderUpdate, Job | None]] = []

    async def __call__(self, provider: str, update: ProviderUpdate, job: Job | None) -> Outcome:
        self.updates.append((provider, update, job))
        return Outcome(event_id="evt_x")


def submitter(store: SqliteStore, provider: FakeProvider) -> Submitter:
    return Submitter(
        store, {"fake": provider}, ["team"], TOKENS, "http://relay.test", Metrics(), Recorded()
    )


@pytest.mark.parametrize(
    ("changes", "error", "status"),
    [
        ({"provider": "nobody"}, UnknownProvider, 404),
        ({"action": "V1"}, UnsupportedAction, 422),
        ({"sinks": ["nowhere"]}, UnknownSink, 422),
    ],
)
async def test_parse_rejects(
    store: SqliteStore, changes: dict[str, object], error: type[Exception], status: int
) -> None:
    with pytest.raises(error) as caught:
        submitter(store, FakeProvider()).parse({**BODY, **changes})
    assert caught.value.http_status == status  # type: ignore[attr-defined]


async def test_submit_sends_a_signed_callback_url_and_records_the_task(
    store: SqliteStore,
) -> None:
    provider = FakeProvider()
    subject = submitter(store, provider)
    job, created = await subject.submit(subject.parse(BODY), "key-1")
    replay, again = await subject.submit(subject.parse(BODY), "key-1")
    assert (created, again, replay.id) == (True, False, job.id)
    assert (job.status, job.provider_task_id) == (JobStatus.SUBMITTED, "task-1")
    [spec] = provider.submitted
    assert spec.callback_url is not None
    assert spec.callback_url.startswith("http://relay.test/callbacks/fake/")
    token = spec.callback_url.rsplit("/", 1)[1]
    assert TOKENS.check(token, "fake").job_id == job.id


async def test_capped_provider_queues_then_dispatches_when_a_slot_frees(
    store: SqliteStore,
) -> None:
    provider = FakeProvider(max_jobs=1)
    subject = submitter(store, provider)
    first, _ = await subject.submit(subject.parse(BODY))
    queued, _ = await subject.submit(subject.parse({**BODY, "action": "U3"}))
    assert (first.status, queued.status) == (JobStatus.SUBMITTED, JobStatus.QUEUED)
    assert await subject.dispatch_queued() == 0  # still full
    await store.delete_job(first.id)  # the slot frees
    assert await subject.dispatch_queued() == 1
    current = await store.get_job(queued.id)
    assert current is not None
    assert current.status is JobStatus.SUBMITTED


class FullProvider(FakeProvider):
    async def submit(self, spec: SubmitSpec) -> SubmitResult:
        self.submitted.append(spec)
        raise ProviderAtCapacity("full", provider=self.name, retry_after_s=60)


async def test_at_capacity_queues_and_backs_off(store: SqliteStore) -> None:
    provider = FullProvider(max_jobs=3)
    subject = submitter(store, provider)
    job, created = await subject.submit(subject.parse(BODY))
    assert (created, job.status) == (True, JobStatus.QUEUED)
    assert await subject.dispatch_queued() == 0
    assert len(provider.submitted) == 1  # backing off: no second try within 60 s
