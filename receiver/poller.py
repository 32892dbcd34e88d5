"""The poller: asks providers about jobs that have no (trusted) callback yet.

- APIMart never calls back: its jobs are polled from the start (3 s, backing off to
  the provider's ``poll_interval_s``, 15 s by default).
- Any job without a terminal callback after ``poll_after_s`` is polled too.
- A callback that must be confirmed (Kie) schedules an immediate poll.
- After ``deadline_s`` the job ends as ``upscale.failed`` with ``error.code = timeout``.

Poll answers go through the same ``record`` (and so the same dedupe) as callbacks.
The loop also submits jobs queued behind a provider's concurrency cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import datetime, timedelta

import structlog

from receiver.errors import ProviderError, RelayError
from receiver.events import CallbackMode, ErrorCode, Job, ProviderUpdate, UpdateState, utcnow
from receiver.ingest import record
from receiver.runtime import Relay
from receiver.submission import dispatch_queued

log = structlog.get_logger("relay.poller")

POLL_LEASE_S = 60.0
BATCH = 20


def next_poll_delay_s(job: Job, now: datetime, interval_s: float) -> float:
    """Back off with the job's age: a quarter of the time since submission, between
    ``min(3, interval_s)`` and ``interval_s`` seconds."""
    started = job.submitted_at or job.created_at
    age_s = (now - started).total_seconds()
    return max(min(3.0, interval_s), min(interval_s, age_s / 4))


async def poll_job(relay: Relay, job: Job) -> None:
    """Poll one job once: record what the provider says, time it out, or reschedule."""
    provider = relay.providers.get(job.provider)
    now = utcnow()
    if provider is None:
        await relay.store.set_next_poll(job.id, None)
        return
    if job.deadline_at is not None and now >= job.deadline_at:
        update = ProviderUpdate(
            provider_task_id=job.provider_task_id or job.id,
            state=UpdateState.FAILED,
            error_code=ErrorCode.TIMEOUT,
            error_message=f"no result from {job.provider} within its deadline",
        )
        await record(relay, job.provider, update, job)
        await relay.store.set_next_poll(job.id, None)
        relay.metrics.polls.labels(job.provider, "timeout").inc()
        log.info("poll.timeout", job_id=job.id, provider=job.provider)
        return
    interval_s = provider.config.poll_interval_s
    if job.provider_task_id is None:
        # not submitted yet (queued, or its submission is still in flight): nothing to
        # ask the provider; look again later, and at the latest at the deadline
        next_at = now + timedelta(seconds=interval_s)
        if job.deadline_at is not None:
            next_at = min(next_at, job.deadline_at)
        await relay.store.set_next_poll(job.id, next_at)
        return
    try:
        update = await provider.poll(job.provider_task_id)
    except (ProviderError, RelayError) as exc:
        relay.metrics.polls.labels(job.provider, "error").inc()
        log.warning("poll.failed", job_id=job.id, provider=job.provider, error=exc.message)
        await relay.store.set_next_poll(job.id, now + timedelta(seconds=interval_s))
        return
    relay.metrics.polls.labels(job.provider, update.state.value).inc()
    if update.provider_task_id != job.provider_task_id:
        log.warning("poll.task_mismatch", job_id=job.id, provider=job.provider)
        update = dataclasses.replace(update, provider_task_id=job.provider_task_id)
    await record(relay, job.provider, update, job)
    if update.state.terminal:
        await relay.store.set_next_poll(job.id, None)
        return
    if provider.callback_mode is CallbackMode.POLL:
        delay = next_poll_delay_s(job, now, interval_s)
    else:
        delay = interval_s
    next_at = now + timedelta(seconds=delay)
    if job.deadline_at is not None:
        next_at = min(next_at, job.deadline_at)
    await relay.store.set_next_poll(job.id, next_at)


async def poll_due(relay: Relay) -> int:
    """Poll every job whose time has come (in small concurrent batches)."""
    total = 0
    while True:
        jobs = await relay.store.claim_pollable(utcnow(), limit=BATCH, lease_s=POLL_LEASE_S)
        if not jobs:
            return total
        await asyncio.gather(*(_safe_poll(relay, job) for job in jobs))
        total += len(jobs)


async def _safe_poll(relay: Relay, job: Job) -> None:
    try:
        await poll_job(relay, job)
    except Exception:  # one bad job must not stop the others
        log.exception("poll.crashed", job_id=job.id, provider=job.provider)


async def run_poller(relay: Relay) -> None:
    """Poll and dispatch queued jobs forever; woken early by ``relay.poll_wakeup``."""
    log.info("poller.started")
    while True:
        relay.poll_wakeup.clear()
        try:
            await dispatch_queued(relay)
            await poll_due(relay)
        except Exception:
            log.exception("poller.tick_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(relay.poll_wakeup.wait(), timeout=relay.settings.poll_tick_s)
