"""The poller: asks providers about jobs that have no (trusted) callback yet.

- APIMart never calls back: its jobs are polled from the start (3 s, backing off to
  the provider's ``poll_interval_s``, 15 s by default).
- Any job without a terminal callback after ``poll_after_s`` is polled too.
- A callback that must be confirmed (Kie) schedules an immediate poll.
- After ``deadline_s`` the job ends as ``upscale.failed`` with ``error.code = timeout``.

Poll answers go through the same ``record`` (and so the same dedupe) as callbacks.
The loop also submits jobs queued behind a provider's concurrency cap. It sleeps on
the store's ``wait_for_work``, the worker's wake-up: on PostgreSQL a poll scheduled by
any process (LISTEN/NOTIFY) wakes it at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

import structlog

from handlers.providers import Provider
from receiver.errors import ProviderError, RelayError
from receiver.events import CallbackMode, ErrorCode, Job, ProviderUpdate, UpdateState, utcnow
from receiver.ingest import Record
from receiver.metrics import Metrics
from receiver.store import Store

log = structlog.get_logger("relay.poller")

POLL_LEASE_S = 60.0
BATCH = 20


def next_poll_delay_s(job: Job, now: datetime, interval_s: float) -> float:
    """Back off with the job's age: a quarter of the time since submission, between
    ``min(3, interval_s)`` and ``interval_s`` seconds."""
    started = job.submitted_at or job.created_at
    age_s = (now - started).total_seconds()
    return max(min(3.0, interval_s), min(interval_s, age_s / 4))


class Poller:
    """Polls the jobs whose ``next_poll_at`` has come, and (first, each round) submits jobs
    queued behind a provider's cap with ``dispatch_queued`` (``Submitter``). Answers go
    to ``record`` (``Ingestor.record``). ``run()`` sleeps on the store's
    ``wait_for_work`` — woken by any process that schedules a poll, ends a job or
    queues one — and looks again at least every ``tick_s``."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        record: Record,
        dispatch_queued: Callable[[], Awaitable[int]],
        metrics: Metrics,
        *,
        tick_s: float = 1.0,
    ) -> None:
        self.store = store
        self.providers = providers
        self.record = record
        self.dispatch_queued = dispatch_queued
        self.metrics = metrics
        self.tick_s = tick_s

    async def run(self) -> None:
        """Poll and dispatch queued jobs forever."""
        log.info("poller.started")
        # subscribe before the first round, so what is scheduled during it wakes the
        # first wait (and, on PostgreSQL, the listener is up before anything is read)
        await self._wait(0)
        while True:
            await self.tick()
            await self._wait(self.tick_s)

    async def _wait(self, timeout_s: float) -> None:
        try:
            await self.store.wait_for_work(timeout_s)
        except Exception:  # the store's listener failing must not end polling
            log.exception("poller.wait_failed")
            await asyncio.sleep(timeout_s)

    async def tick(self) -> None:
        """One round: dispatch queued jobs, then poll what is due; never raises."""
        try:
            await self.dispatch_queued()
            await self.poll_due()
        except Exception:
            log.exception("poller.tick_failed")

    async def poll_due(self) -> int:
        """Poll every job whose time has come (in small concurrent batches)."""
        total = 0
        while True:
            jobs = await self.store.claim_pollable(utcnow(), limit=BATCH, lease_s=POLL_LEASE_S)
            if not jobs:
                return total
            await asyncio.gather(*(self._safe_poll(job) for job in jobs))
            total += len(jobs)

    async def _safe_poll(self, job: Job) -> None:
        try:
            await self.poll_job(job)
        except Exception:  # one bad job must not stop the others
            log.exception("poll.crashed", job_id=job.id, provider=job.provider)

    async def poll_job(self, job: Job) -> None:
        """Poll one job once: record what the provider says, time it out, or reschedule."""
        provider = self.providers.get(job.provider)
        now = utcnow()
        if provider is None:
            await self.store.set_next_poll(job.id, None)
            return
        if job.deadline_at is not None and now >= job.deadline_at:
            await self._time_out(job)
            return
        interval_s = provider.config.poll_interval_s
        if job.provider_task_id is None:
            # not submitted yet (queued, or its submission is still in flight): nothing to
            # ask the provider; look again later, and at the latest at the deadline
            await self._reschedule(job, now + timedelta(seconds=interval_s))
            return
        try:
            update = await provider.poll(job.provider_task_id)
        except (ProviderError, RelayError) as exc:
            self.metrics.polls.labels(job.provider, "error").inc()
            log.warning("poll.failed", job_id=job.id, provider=job.provider, error=exc.message)
            await self.store.set_next_poll(job.id, now + timedelta(seconds=interval_s))
            return
        self.metrics.polls.labels(job.provider, update.state.value).inc()
        if update.provider_task_id != job.provider_task_id:
            log.warning("poll.task_mismatch", job_id=job.id, provider=job.provider)
            update = dataclasses.replace(update, provider_task_id=job.provider_task_id)
        await self.record(job.provider, update, job)
        if update.state.terminal:
            await self.store.set_next_poll(job.id, None)
            return
        if provider.callback_mode is CallbackMode.POLL:
            delay = next_poll_delay_s(job, now, interval_s)
        else:
            delay = interval_s
        await self._reschedule(job, now + timedelta(seconds=delay))

    async def _time_out(self, job: Job) -> None:
        update = ProviderUpdate(
            provider_task_id=job.provider_task_id or job.id,
            state=UpdateState.FAILED,
            error_code=ErrorCode.TIMEOUT,
            error_message=f"no result from {job.provider} within its deadline",
        )
        await self.record(job.provider, update, job)
        await self.store.set_next_poll(job.id, None)
        self.metrics.polls.labels(job.provider, "timeout").inc()
        log.info("poll.timeout", job_id=job.id, provider=job.provider)

    async def _reschedule(self, job: Job, next_at: datetime) -> None:
        """Poll again at ``next_at``, and at the latest at the job's deadline."""
        if job.deadline_at is not None:
            next_at = min(next_at, job.deadline_at)
        await self.store.set_next_poll(job.id, next_at)
