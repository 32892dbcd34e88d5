"""From a provider's message to a committed event: verify, parse, correlate, record.

Order of checks (DESIGN §3): provider → token → the job's secret/signature (401) →
parse (400) → correlation (409). Nothing is written before all checks pass; the
caller answers 200 only after ``record`` has committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import structlog

from receiver.errors import Conflict, NotFound
from receiver.events import (
    EXTERNAL_JOB_PREFIX,
    STATUS_FOR_STATE,
    CallbackMode,
    Job,
    JobStatus,
    ProviderUpdate,
    build_event,
    new_id,
    utcnow,
)
from receiver.jsonbody import decode_json
from receiver.routing import route_event
from receiver.runtime import Relay
from receiver.store import Ingest

log = structlog.get_logger("relay.ingest")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one provider message."""

    event_id: str | None
    duplicate: bool = False
    awaiting_confirmation: bool = False


def check_correlation(job: Job, update: ProviderUpdate) -> None:
    """``Conflict`` (409) when the message names another job's task or reference."""
    if update.correlation_id is not None and update.correlation_id != job.id:
        raise Conflict("callback names another job's reference", job_id=job.id)
    if job.provider_task_id is not None and update.provider_task_id != job.provider_task_id:
        raise Conflict("callback names another job's task", job_id=job.id)


async def record(relay: Relay, provider: str, update: ProviderUpdate, job: Job | None) -> Outcome:
    """Commit ``update`` as an event with its deliveries; a duplicate is a no-op.

    A message about a job that already ended (a late progress, a second terminal
    state) is recorded as an event but routed nowhere and never moves the job.
    """
    now = utcnow()
    event = build_event(provider, update, job, now)
    late = job is not None and job.status.terminal
    sinks = (
        []
        if late
        else route_event(
            event,
            relay.settings.routes,
            relay.sinks,
            list(job.sinks) if job is not None and job.sinks is not None else None,
        )
    )
    inserted = await relay.store.ingest(
        Ingest(
            event=event,
            job_id=job.id if job else None,
            job_status=None if late or job is None else STATUS_FOR_STATE[update.state],
            sinks=sinks,
            now=now,
            provider_task_id=update.provider_task_id,
            finished_at=now if update.state.terminal else None,
        )
    )
    if inserted:
        relay.metrics.events.labels(provider, event.type.value).inc()
        log.info(
            "event.recorded",
            event_id=event.id,
            type=event.type.value,
            job_id=event.job_id,
            provider=provider,
            sinks=sinks,
            late=late,
        )
        if update.state.terminal and job is not None and job.status.terminal is False:
            relay.poll_wakeup.set()  # a slot may have freed up for queued jobs
    return Outcome(event_id=event.id, duplicate=not inserted)


async def accept_job_callback(
    relay: Relay, provider_name: str, token: str, headers: Mapping[str, str], body: bytes
) -> Outcome:
    """A callback to ``/callbacks/{provider}/{token}`` for a job we submitted."""
    provider = relay.provider(provider_name)
    claim = relay.tokens.check(token, provider_name)
    job = await relay.store.get_job(claim.job_id)
    if job is None:
        raise NotFound("the job this callback URL was made for no longer exists")
    provider.verify_callback(headers, body, job.callback_secret)
    update = provider.parse_callback(decode_json(body))
    check_correlation(job, update)
    return await _commit(relay, provider_name, update, job)


async def accept_account_callback(
    relay: Relay, provider_name: str, headers: Mapping[str, str], body: bytes
) -> Outcome:
    """An account-level callback (``/callbacks/{provider}``): only where the provider's
    account secret or HMAC can be checked. Matched to our job by task id or by the
    reference the provider echoes; otherwise an event with no job of ours."""
    provider = relay.provider(provider_name)
    provider.verify_account_callback(headers, body)
    update = provider.parse_callback(decode_json(body))
    job = await relay.store.find_job_by_task(provider_name, update.provider_task_id)
    if job is None and update.correlation_id is not None:
        candidate = await relay.store.get_job(update.correlation_id)
        if candidate is not None and candidate.provider == provider_name:
            job = candidate
    if job is not None:
        check_correlation(job, update)
    elif update.state.terminal and provider.config.confirm_by_poll:
        job = await _track_external(relay, provider_name, update)
    return await _commit(relay, provider_name, update, job)


async def _track_external(relay: Relay, provider_name: str, update: ProviderUpdate) -> Job:
    """Store a job for a task started elsewhere, so the poller can confirm it durably
    (the callback is answered at once; its event comes from the confirming poll)."""
    config = relay.provider(provider_name).config
    now = utcnow()
    job = Job(
        id=new_id(EXTERNAL_JOB_PREFIX),
        provider=provider_name,
        parent_id=update.parent_id or "",
        action="",
        ref=None,
        status=JobStatus.PROCESSING,
        callback_mode=CallbackMode.WEBHOOK,
        created_at=now,
        provider_task_id=update.provider_task_id,
        submitted_at=now,
        next_poll_at=now,
        deadline_at=now + timedelta(seconds=config.deadline_s),
    )
    created, _new = await relay.store.create_job(job)
    return created


async def _commit(
    relay: Relay, provider_name: str, update: ProviderUpdate, job: Job | None
) -> Outcome:
    provider = relay.provider(provider_name)
    if update.state.terminal and provider.config.confirm_by_poll and job is not None:
        # the body is not covered by a signature: ask the provider before emitting
        if not job.status.terminal:
            await relay.store.set_next_poll(job.id, utcnow())
            relay.poll_wakeup.set()
        log.info("callback.awaiting_confirmation", job_id=job.id, provider=provider_name)
        return Outcome(event_id=None, awaiting_confirmation=True)
    return await record(relay, provider_name, update, job)
