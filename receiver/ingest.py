"""From a provider's message to a committed event: verify, parse, correlate, record.

Order of checks (DESIGN §3): provider → token → the job's secret/signature (401) →
parse (400) → correlation (409). Nothing is written before all checks pass; the
caller answers 200 only after ``record`` has committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog

from handlers.providers import Provider
from receiver.errors import Conflict, NotFound, UnknownProvider
from receiver.events import (
    EXTERNAL_JOB_PREFIX,
    STATUS_FOR_STATE,
    CallbackMode,
    Job,
    JobStatus,
    ProviderUpdate,
    build_event,
    new_ordered_id,
    utcnow,
)
from receiver.jsonbody import decode_json
from receiver.metrics import Metrics
from receiver.routing import Route, route_event
from receiver.store import Ingest, JobLookup, Store
from receiver.tokens import CallbackTokens

log = structlog.get_logger("relay.ingest")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one provider message."""

    event_id: str | None
    duplicate: bool = False
    awaiting_confirmation: bool = False
    job_id: str | None = None
    sinks: Sequence[str] = ()
    type: str | None = None  # the event's type


def check_correlation(job: Job, update: ProviderUpdate) -> None:
    """``Conflict`` (409) when the message names another job's task or reference."""
    if update.correlation_id is not None and update.correlation_id != job.id:
        raise Conflict("callback names another job's reference", job_id=job.id)
    if job.provider_task_id is not None and update.provider_task_id != job.provider_task_id:
        raise Conflict("callback names another job's task", job_id=job.id)


Record = Callable[[str, ProviderUpdate, Job | None], Awaitable[Outcome]]
"""``Ingestor.record``'s shape, for collaborators that record updates (poller, submitter)."""


class Ingestor:
    """Turns provider messages (callbacks, poll answers) into committed events routed to
    sinks. Built once per process; ``providers`` are the configured ones, ``routes`` and
    ``sinks`` (names) decide where each event goes."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        tokens: CallbackTokens,
        routes: Sequence[Route],
        sinks: Collection[str],
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.providers = providers
        self.tokens = tokens
        self.routes = routes
        self.sinks = list(sinks)
        self.metrics = metrics

    def provider(self, name: str) -> Provider:
        """The configured provider called ``name``; ``UnknownProvider`` (404) otherwise."""
        provider = self.providers.get(name)
        if provider is None:
            raise UnknownProvider(name)
        return provider

    def prepare(self, provider: str, update: ProviderUpdate, job: Job | None) -> Ingest:
        """The record that commits ``update`` as an event with its deliveries (pure).

        A message about a job that already ended (a late progress, a second terminal
        state) is recorded as an event but routed nowhere and never moves the job.
        """
        now = utcnow()
        event = build_event(provider, update, job, now)
        late = job is not None and job.status.terminal
        job_sinks = list(job.sinks) if job is not None and job.sinks is not None else None
        sinks = [] if late else route_event(event, self.routes, self.sinks, job_sinks)
        return Ingest(
            event=event,
            job_id=job.id if job else None,
            job_status=None if late or job is None else STATUS_FOR_STATE[update.state],
            sinks=sinks,
            now=now,
            provider_task_id=update.provider_task_id,
            finished_at=now if update.state.terminal else None,
        )

    async def record(
        self, provider: str, update: ProviderUpdate, job: Job | None, *, announce: bool = True
    ) -> Outcome:
        """Commit ``update`` as an event with its deliveries; a duplicate is a no-op."""
        record = self.prepare(provider, update, job)
        inserted = await self.store.ingest(record)
        return self._recorded(provider, record, job, inserted, announce=announce)

    def _recorded(
        self, provider: str, record: Ingest, job: Job | None, inserted: bool, *, announce: bool
    ) -> Outcome:
        event = record.event
        if inserted:
            # the store's wake-up reaches the worker and (a job that ended may free a
            # provider slot for queued jobs) the poller
            self.metrics.events.labels(provider, event.type.value).inc()
            ended = record.job_status is not None and record.finished_at is not None
            if job is not None and ended and not job.external:
                status = record.job_status.value if record.job_status else ""
                self.metrics.observe_job(provider, status, job.created_at, record.now)
            # a callback's one line (callback.accepted) says the same: debug for those
            (log.info if announce else log.debug)(
                "event.recorded",
                event_id=event.id,
                type=event.type.value,
                job_id=event.job_id,
                provider=provider,
                sinks=list(record.sinks),
            )
        return Outcome(
            event_id=event.id,
            duplicate=not inserted,
            job_id=event.job_id,
            sinks=record.sinks,
            type=event.type.value,
        )

    async def job_callback(
        self, provider: Provider, token: str, headers: Mapping[str, str], body: bytes
    ) -> Outcome:
        """A callback to ``/callbacks/{provider}/{token}`` for a job we submitted."""
        claim = self.tokens.check(token, provider.name)

        def checked(job: Job | None) -> ProviderUpdate:
            if job is None:
                raise NotFound("the job this callback URL was made for no longer exists")
            provider.verify_callback(headers, body, job.callback_secret)
            update = provider.parse_callback(decode_json(body))
            check_correlation(job, update)
            return update

        return await self._accept(provider, JobLookup(job_id=claim.job_id), checked)

    async def account_callback(
        self, provider: Provider, headers: Mapping[str, str], body: bytes
    ) -> Outcome:
        """An account-level callback (``/callbacks/{provider}``): only where the provider's
        account secret or HMAC can be checked. Matched to our job by task id or by the
        reference the provider echoes; otherwise an event with no job of ours."""
        provider.verify_account_callback(headers, body)
        update = provider.parse_callback(decode_json(body))

        def checked(job: Job | None) -> ProviderUpdate:
            if job is not None:
                check_correlation(job, update)
            return update

        lookup = JobLookup(None, provider.name, update.provider_task_id, update.correlation_id)
        return await self._accept(provider, lookup, checked)

    async def _accept(
        self,
        provider: Provider,
        lookup: JobLookup,
        checked: Callable[[Job | None], ProviderUpdate],
    ) -> Outcome:
        """One store trip for the common case (the job's lookup, the checks that need it,
        and the event's commit: ``Store.ingest_for``); an update that must first be
        confirmed by a poll takes the longer way (``_commit``)."""
        updates: list[ProviderUpdate] = []

        def plan(job: Job | None) -> Ingest | None:
            update = checked(job)  # raises (401, 404, 409 …) with nothing written
            updates.append(update)
            if update.state.terminal and provider.config.confirm_by_poll:
                return None
            return self.prepare(provider.name, update, job)

        job, record, inserted = await self.store.ingest_for(lookup, plan)
        if record is not None:
            return self._recorded(provider.name, record, job, inserted, announce=False)
        [update] = updates
        if job is None:  # a task started elsewhere (account-level, confirm_by_poll)
            job = await self._track_external(provider, update)
        return await self._commit(provider, update, job)

    async def _track_external(self, provider: Provider, update: ProviderUpdate) -> Job:
        """Store a job for a task started elsewhere, so the poller can confirm it durably
        (the callback is answered at once; its event comes from the confirming poll)."""
        now = utcnow()
        job = Job(
            id=new_ordered_id(EXTERNAL_JOB_PREFIX),
            provider=provider.name,
            parent_id=update.parent_id or "",
            action="",
            ref=None,
            status=JobStatus.PROCESSING,
            callback_mode=CallbackMode.WEBHOOK,
            created_at=now,
            provider_task_id=update.provider_task_id,
            submitted_at=now,
            next_poll_at=now,
            deadline_at=now + timedelta(seconds=provider.config.deadline_s),
        )
        created, _new = await self.store.create_job(job)
        return created

    async def _commit(self, provider: Provider, update: ProviderUpdate, job: Job | None) -> Outcome:
        if update.state.terminal and provider.config.confirm_by_poll and job is not None:
            # the body is not covered by a signature: ask the provider before emitting
            # (``set_next_poll`` wakes the poller of every process)
            if not job.status.terminal:
                await self.store.set_next_poll(job.id, utcnow())
            log.info("callback.awaiting_confirmation", job_id=job.id, provider=provider.name)
            return Outcome(event_id=None, awaiting_confirmation=True)
        return await self.record(provider.name, update, job, announce=False)
