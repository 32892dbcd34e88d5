"""Submitting upscales: validate, store the job (idempotently), hand it to the provider
— or queue it while the provider's concurrency cap (useapi's ``max_jobs``) is full."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from handlers.providers import Provider, SubmitSpec
from handlers.providers.actions import normalise_action
from receiver.errors import (
    BadRequest,
    ClientError,
    Conflict,
    ProviderAtCapacity,
    ProviderError,
    ProviderRateLimited,
    UnknownProvider,
    UnknownSink,
    UnsupportedAction,
)
from receiver.events import (
    CallbackMode,
    ErrorCode,
    Job,
    JobStatus,
    ProviderUpdate,
    UpdateState,
    new_ordered_id,
    utcnow,
)
from receiver.ingest import Record
from receiver.metrics import Metrics
from receiver.store import Store
from receiver.tokens import CallbackTokens, new_job_secret

log = structlog.get_logger("relay.submit")

ACTIVE = (JobStatus.SUBMITTED, JobStatus.PROCESSING)
FIRST_POLL_S = 3.0


@dataclass(frozen=True, slots=True)
class UpscaleRequest:
    """A validated ``POST /v1/upscales`` body."""

    provider: str
    parent_id: str
    action: str
    ref: str | None
    sinks: tuple[str, ...] | None

    def fingerprint(self) -> str:
        canonical = json.dumps(
            [self.provider, self.parent_id, self.action, self.ref, self.sinks],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class Submitter:
    """Validates and submits upscales, and submits jobs queued behind a provider's
    concurrency cap. Owns what submission must remember between calls: one lock per
    capped provider (count → submit → record cannot overshoot ``max_jobs`` within this
    process) and the provider's back-off after it said it was full.

    ``record`` commits a provider update (``Ingestor.record``): a queued job the
    provider refuses ends as ``upscale.failed``.
    """

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        sinks: Collection[str],
        tokens: CallbackTokens,
        public_url: str,
        metrics: Metrics,
        record: Record,
    ) -> None:
        self.store = store
        self.providers = providers
        self.sinks = set(sinks)
        self.tokens = tokens
        self.public_url = public_url
        self.metrics = metrics
        self.record = record
        self._locks: dict[str, asyncio.Lock] = {}
        self._not_before: dict[str, datetime] = {}

    def parse(self, body: Any) -> UpscaleRequest:
        """Validate a submit body: 400 malformed fields, 404 unknown provider, 422 what
        we cannot do."""
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        for name in ("provider", "parent_id", "action"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise BadRequest(f"{name!r} is required and must be a non-empty string", field=name)
        ref = body.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise BadRequest("'ref' must be a string", field="ref")
        sinks = body.get("sinks")
        if sinks is not None and (
            not isinstance(sinks, list) or not all(isinstance(s, str) for s in sinks)
        ):
            raise BadRequest("'sinks' must be a list of sink names", field="sinks")
        provider_name = body["provider"].strip()
        provider = self.providers.get(provider_name)
        if provider is None:
            raise UnknownProvider(provider_name, configured=sorted(self.providers))
        supported = list(provider.supported_actions())
        try:
            action = normalise_action(body["action"])
        except BadRequest as exc:  # not an upscale at all (V1, Zoom Out 2x …)
            raise UnsupportedAction(provider_name, body["action"], supported) from exc
        if action not in supported:
            raise UnsupportedAction(provider_name, action, supported)
        if sinks is not None:
            unknown = [s for s in sinks if s not in self.sinks]
            if unknown:
                raise UnknownSink(
                    f"unknown sinks: {', '.join(unknown)}", configured=sorted(self.sinks)
                )
        return UpscaleRequest(
            provider=provider_name,
            parent_id=body["parent_id"].strip(),
            action=action,
            ref=ref,
            sinks=tuple(sinks) if sinks is not None else None,
        )

    async def submit(
        self, request: UpscaleRequest, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Create the job and submit it (or queue it). Returns the job and whether it is
        new; the same idempotency key and body return the first job without resubmitting.

        Every job gets its deadline at creation, and a queued job's first "poll" is its
        deadline: a job that never leaves the queue still ends, as ``timeout``.
        """
        provider = self.providers.get(request.provider)
        if provider is None:
            raise UnknownProvider(request.provider)
        now = utcnow()
        deadline = now + timedelta(seconds=provider.config.deadline_s)
        job = Job(
            id=new_ordered_id("job"),
            provider=request.provider,
            parent_id=request.parent_id,
            action=request.action,
            ref=request.ref,
            status=JobStatus.QUEUED,
            callback_mode=provider.callback_mode,
            created_at=now,
            callback_secret=new_job_secret() if provider.mints_job_secret else None,
            sinks=request.sinks,
            next_poll_at=deadline,
            deadline_at=deadline,
        )
        job, created = await self.store.create_job(
            job, idempotency_key=idempotency_key, request_hash=request.fingerprint()
        )
        if not created:
            return await self._settled(provider, job), False
        if provider.config.max_jobs is None:
            try:
                return await self.send(provider, job), True
            except (ProviderError, ClientError):
                await self.store.delete_job(job.id)
                raise
        async with self._lock(job.provider):
            if not await self._has_free_slot(provider):
                log.info("submit.queued", job_id=job.id, provider=job.provider)
                self.metrics.submissions.labels(job.provider, "queued").inc()
                return job, True
            try:
                return await self.send(provider, job), True
            except ProviderAtCapacity as exc:
                self._back_off(job.provider, exc.retry_after_s)
                log.info("submit.queued_at_capacity", job_id=job.id, provider=job.provider)
                return job, True
            except (ProviderError, ClientError):
                await self.store.delete_job(job.id)
                raise

    def _lock(self, provider: str) -> asyncio.Lock:
        return self._locks.setdefault(provider, asyncio.Lock())

    async def _settled(self, provider: Provider, job: Job, wait_s: float = 10.0) -> Job:
        """A replayed request for a job that a concurrent request is still submitting:
        wait (briefly) for that submission, so both answers name the provider's task."""
        if provider.config.max_jobs is not None:
            return job  # capped providers queue on purpose
        deadline = time.monotonic() + wait_s
        while job.status is JobStatus.QUEUED and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            current = await self.store.get_job(job.id)
            if current is None:  # the first submission failed and was removed
                raise Conflict("the first request with this Idempotency-Key failed; retry it")
            job = current
        return job

    async def _has_free_slot(self, provider: Provider) -> bool:
        """Below ``max_jobs`` and not backing off after the provider said it was full."""
        not_before = self._not_before.get(provider.name)
        if not_before is not None and utcnow() < not_before:
            return False
        cap = provider.config.max_jobs
        return cap is None or await self.store.count_jobs(provider.name, ACTIVE) < cap

    def _back_off(self, provider: str, seconds: float) -> None:
        self._not_before[provider] = utcnow() + timedelta(seconds=seconds)

    def callback_url(self, job_id: str, provider: str) -> str:
        token = self.tokens.mint(job_id, provider)
        return f"{self.public_url}/callbacks/{provider}/{token}"

    async def send(self, provider: Provider, job: Job) -> Job:
        """Submit a stored job to its provider and record the provider's task id (the
        store's wake-up tells the poller about its first poll)."""
        spec = SubmitSpec(
            job_id=job.id,
            parent_id=job.parent_id,
            action=job.action,
            callback_url=(
                self.callback_url(job.id, job.provider)
                if provider.callback_mode is CallbackMode.WEBHOOK
                else None
            ),
            callback_secret=job.callback_secret,
        )
        try:
            result = await provider.submit(spec)
        except ProviderError as exc:
            self.metrics.submissions.labels(job.provider, exc.code).inc()
            log.warning("submit.failed", job_id=job.id, provider=job.provider, error=exc.code)
            raise
        now = utcnow()
        config = provider.config
        if result.existing:
            first_poll = now  # the provider already ran this: ask it for the result now
        elif provider.callback_mode is CallbackMode.POLL:
            first_poll = now + timedelta(seconds=min(FIRST_POLL_S, config.poll_interval_s))
        else:
            first_poll = now + timedelta(seconds=config.poll_after_s)
        deadline = job.deadline_at or now + timedelta(seconds=config.deadline_s)
        updated = await self.store.mark_submitted(
            job.id,
            provider_task_id=result.provider_task_id,
            submitted_at=now,
            next_poll_at=min(first_poll, deadline),
            deadline_at=deadline,
        )
        outcome = "existing" if result.existing else "ok"
        self.metrics.submissions.labels(job.provider, outcome).inc()
        log.info(
            "submit.accepted",
            job_id=job.id,
            provider=job.provider,
            provider_task_id=result.provider_task_id,
            existing=result.existing,
        )
        return updated

    async def dispatch_queued(self) -> int:
        """Submit queued jobs of capped providers, oldest first, while slots are free;
        returns how many went out. Runs in the poller loop, which a job that ends wakes."""
        sent = 0
        for name, provider in self.providers.items():
            if provider.config.max_jobs is None:
                # only capped providers queue; an uncapped job still "queued" is mid-submit
                # (or its process died mid-submit, and its deadline will end it)
                continue
            queued = await self.store.list_jobs(status=JobStatus.QUEUED, provider=name, limit=50)
            if not queued:
                continue
            async with self._lock(name):
                for job in sorted(queued, key=lambda j: j.created_at):
                    if not await self._has_free_slot(provider):
                        break
                    current = await self.store.get_job(job.id)
                    if current is None or current.status is not JobStatus.QUEUED:
                        continue  # submitted elsewhere meanwhile, or timed out
                    try:
                        await self.send(provider, job)
                        sent += 1
                    except ProviderRateLimited as exc:
                        self._back_off(name, exc.retry_after_s)
                        break  # the provider is full after all: try once its wait is over
                    except ProviderError as exc:
                        await self._fail_queued(job, exc)
        return sent

    async def _fail_queued(self, job: Job, exc: ProviderError) -> None:
        update = ProviderUpdate(
            provider_task_id=job.provider_task_id or job.id,
            state=UpdateState.FAILED,
            error_code=ErrorCode.PROVIDER_ERROR,
            error_message=exc.message,
        )
        await self.record(job.provider, update, job)
