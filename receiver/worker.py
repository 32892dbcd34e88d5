"""The delivery worker: claim due deliveries, then for each one *attempt* (call the
sink), *decide* (``receiver.decision.decide``, pure) and *record* (one outcome, written
with the others that are ready: one ``Store.record_outcomes`` trip per batch, which also
writes each attempt's row, its entry in the stream's feed and its sink-health change).
Per-sink concurrency limits live here; the circuit breakers are shared by every worker
through the store (``receiver.sink_health``).

Claims are batched as well: while deliveries are in flight the worker tops its batch up
at most every ``REFILL_WAIT_S`` instead of after each completion, so a backlog costs one
claim trip per many deliveries."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import structlog

from handlers.sinks import Sink
from handlers.sinks.base import DeliveryNote, answer_of
from receiver.attempts import (
    NewAttempt,
    destination_host,
    known_secrets,
    redact,
    response_excerpt,
)
from receiver.batching import Batcher
from receiver.decision import AttemptResult, Decision, Disposition, RetryPolicy, decide
from receiver.errors import DeliveryFailed
from receiver.events import Delivery, DueDelivery, Event, utcnow
from receiver.feed import FeedEntry, OutcomeType, outcome_entry
from receiver.metrics import Metrics
from receiver.retry import Verdict
from receiver.sink_health import HealthChange, HealthState, SinkBoard
from receiver.store import DeliveryOutcome, Store

log = structlog.get_logger("relay.worker")

IDLE_WAIT_S = 1.0
STORE_ERROR_BACKOFF_S = 1.0
BLOCKED_WAIT_S = 0.25  # due work exists but is paused or leased elsewhere
REFILL_WAIT_S = 0.01  # with deliveries in flight, claim more at most this often
#: outcomes wait this long for company before they are written: under load one store
#: trip then carries dozens, not a handful. No delivery waits for it (its slot is free at
#: once); its lease keeps it from being claimed again meanwhile, and the stream's
#: delivery.* entries appear up to this much later.
OUTCOME_LINGER_S = 0.02
#: an outcome whose lease ends sooner than this is written at once, without the linger
LEASE_MARGIN_S = 1.0


class DeliveryWorker:
    """Runs deliveries for ``sinks`` from ``store``. ``run()`` forever (in-process or
    ``relay worker``), ``drain(budget_s)`` until nothing is due (``--once``, inline).

    ``lease_s`` is how long a claim holds a delivery; ``grace_s`` how long in-flight
    deliveries may finish when ``run()`` is cancelled; ``clock`` a monotonic clock.
    """

    def __init__(
        self,
        store: Store,
        sinks: Mapping[str, Sink],
        policy: RetryPolicy,
        metrics: Metrics,
        *,
        lease_s: float = 60.0,
        batch: int = 64,
        owner: str | None = None,
        grace_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.sinks = sinks
        self.policy = policy
        self.metrics = metrics
        self.lease_s = lease_s
        self.batch = batch
        self.owner = owner or "w-" + secrets.token_hex(4)
        self.grace_s = grace_s
        self._clock = clock
        self.board = SinkBoard(store, {name: sink.config for name, sink in sinks.items()})
        self._hosts = {
            name: destination_host(sink.config.options, getattr(sink, "destination_host", None))
            for name, sink in sinks.items()
        }
        self._secrets = {name: known_secrets(sink.config.options) for name, sink in sinks.items()}
        self._probes: set[str] = set()  # deliveries this worker claimed as a circuit's probe
        self._semaphores = {
            name: asyncio.Semaphore(sink.config.max_concurrency) for name, sink in sinks.items()
        }
        self._in_flight: set[asyncio.Task[None]] = set()
        #: resolved when a delivery finishes (or, with ``_wake_when_empty``, the last one):
        #: waiting on it costs O(1), where ``asyncio.wait(in_flight)`` costs O(in flight)
        self._slot_waiter: asyncio.Future[None] | None = None
        self._wake_when_empty = False
        self._outcomes: Batcher[DeliveryOutcome] = Batcher(
            store.record_outcomes, linger_s=OUTCOME_LINGER_S, on_error=_record_failed
        )
        #: per sink: since when (monotonic) it keeps answering "rate limited", and until
        #: when nothing more is sent to it (its ``Retry-After``)
        self._throttled_since: dict[str, float] = {}
        self._paused_until: dict[str, float] = {}

    async def run(self) -> None:
        """Deliver forever; wakes at once when new deliveries are committed."""
        log.info("worker.started", owner=self.owner)
        try:
            await self._loop()
        finally:
            # cancelled (shutdown): stop claiming, let what is in flight finish within
            # ``grace_s``, and leave the rest to their leases
            if self._in_flight and self.grace_s > 0:
                await asyncio.wait(self._in_flight, timeout=self.grace_s)
            await self.stop()

    async def _loop(self) -> None:
        while True:
            try:
                claimed = await self._claim_and_start()
                if not claimed:
                    await self.store.wait_for_work(await self._idle_wait_s())
            except asyncio.CancelledError:
                raise
            except Exception:
                # a store hiccup (locked SQLite file, PostgreSQL failover) must not end
                # delivery for good: log, back off, try again
                log.exception("worker.loop_failed")
                await asyncio.sleep(STORE_ERROR_BACKOFF_S)

    async def _idle_wait_s(self) -> float:
        due = await self.store.next_due_at()
        if due is None:
            return IDLE_WAIT_S
        wait = (due - utcnow()).total_seconds()
        return BLOCKED_WAIT_S if wait <= 0 else min(IDLE_WAIT_S, wait)

    async def _claim_and_start(self) -> int:
        room = self.batch - len(self._in_flight)
        if room <= 0:
            await self._wait_for_completion()
            return 1
        if self._in_flight and room < self.batch // 2:
            # let completions add up: one claim for many freed slots, not one per slot
            await self._wait_for_completion(REFILL_WAIT_S, all_of_them=True)
            room = self.batch - len(self._in_flight)
        await self.board.refresh()
        blocked = self.board.blocked()
        blocked += [n for n in self._paused_until if self._pause_left_s(n) > 0 and n not in blocked]
        lease_ends = self._clock() + self.lease_s  # no later than the store's lease_until
        due = await self._claim(room, exclude_sinks=blocked)
        now = utcnow()
        for name in self.board.probe_candidates(now):
            probe = await self.store.claim_probe(
                name,
                now,
                owner=self.owner,
                lease_s=self.lease_s,
                probe_interval_s=self.sinks[name].config.circuit_probe_interval_s,
            )
            if probe is not None:  # this worker won the probe for every process
                self._probes.add(probe.delivery.id)
                self.board.invalidate()
                due.append(probe)
        for item in due:
            task = asyncio.create_task(self._deliver(item, lease_ends))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        return len(due)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        waiter = self._slot_waiter
        if waiter is not None and not (self._wake_when_empty and self._in_flight):
            _resolve(waiter)

    async def _wait_for_completion(
        self, timeout_s: float | None = None, *, all_of_them: bool = False
    ) -> None:
        """Until one in-flight delivery finishes (``all_of_them``: the last one), or
        ``timeout_s`` passes."""
        if not self._in_flight:
            return
        loop = asyncio.get_running_loop()
        waiter = self._slot_waiter = loop.create_future()
        self._wake_when_empty = all_of_them
        timer = None if timeout_s is None else loop.call_later(timeout_s, _resolve, waiter)
        try:
            await waiter
        finally:
            self._slot_waiter = None
            if timer is not None:
                timer.cancel()

    async def _claim(self, limit: int, *, exclude_sinks: list[str]) -> list[DueDelivery]:
        return await self.store.claim_due(
            utcnow(),
            limit=limit,
            lease_s=self.lease_s,
            owner=self.owner,
            exclude_sinks=exclude_sinks,
        )

    async def drain(self, budget_s: float) -> int:
        """Deliver what is due now until nothing is left or ``budget_s`` runs out.
        Returns the number of deliveries attempted."""
        deadline = time.monotonic() + budget_s
        attempted = 0
        while time.monotonic() < deadline:
            started = await self._claim_and_start()
            attempted += started
            if not started and not self._in_flight:
                break
            if self._in_flight:
                await self._wait_for_completion(max(0.0, deadline - time.monotonic()))
        if self._in_flight:
            # out of budget: leave the rest to the lease expiry / next run
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self._outcomes.flush()
        return attempted

    async def stop(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self._outcomes.flush()  # outcomes already decided are still written

    async def _deliver(self, item: DueDelivery, lease_ends: float) -> None:
        try:
            await self._deliver_one(item, lease_ends)
        except asyncio.CancelledError:
            raise
        except Exception:
            # a bug past the sink call: the lease runs out and the delivery is retried
            log.exception("delivery.crashed", delivery_id=item.delivery.id)
        finally:
            self._probes.discard(item.delivery.id)

    async def _deliver_one(self, item: DueDelivery, lease_ends: float) -> None:
        """Attempt under the sink's concurrency slot, decide, record, report."""
        delivery = item.delivery
        bound = log.bind(
            delivery_id=delivery.id,
            event_id=item.event.id,
            sink=delivery.sink,
            attempt=delivery.attempts + 1,
        )
        sink = self.sinks.get(delivery.sink)
        if sink is None:
            error = f"sink {delivery.sink!r} is no longer configured"
            now = utcnow()
            decision = Decision.dead(None, error)
            feed = self._feed_entry(item, decision, None, now)
            self._record(delivery.id, decision, now, feed=feed)
            bound.warning("delivery.dead", reason="sink_not_configured")
            return
        slots = self._semaphores[delivery.sink]
        waited = slots.locked()
        async with slots:
            # A claim may wait here for a free slot. After a wait, send only if the lease
            # outlasts the send: once it runs out, the delivery can be claimed again (by
            # any worker, this one included) and that claim sends it; sending it here too
            # would deliver it twice. Left alone, it is re-claimed when the lease expires.
            margin_s = min(sink.config.timeout_s, self.lease_s / 2)
            if waited and self._clock() > lease_ends - margin_s:
                # (a probe that never went out: its lease runs out, another worker probes)
                bound.info("delivery.lease_expired_waiting")
                return
            probe = delivery.id in self._probes
            if not probe and self.board.state(delivery.sink) is not HealthState.OK:
                # claimed before the circuit opened (here or anywhere): back untried
                self._record(delivery.id, Decision.released(utcnow()))
                return
            pause_s = self._pause_left_s(delivery.sink)
            if pause_s > 0:
                # claimed before the destination asked for a pause: back untried, at its end
                at = utcnow() + timedelta(seconds=pause_s)
                self._record(delivery.id, Decision.released(at))
                return
            result = await self._attempt(sink, item.event, bound)
        self.metrics.delivery_seconds.labels(delivery.sink).observe(result.duration_s)
        now = utcnow()
        decision = decide(
            result,
            attempts_made=delivery.attempts,
            schedule_s=self.policy.schedule_for(sink.config.retry_schedule_s),
            now=now,
            jitter=self.policy.jitter,
            throttled_for_s=self._note_throttling(delivery.sink, result),
            throttle_budget_s=self.policy.throttle_budget_s,
        )
        health = _health_change(delivery.sink, sink.config.circuit_failure_threshold, result, now)
        if health is not None and health.up and health.error is None:
            known = self.board.health(delivery.sink)
            if known.state is HealthState.OK and known.failures == 0:
                health = None  # nothing to reset (as of the last look): spare the hot path
        if decision.disposition is Disposition.RELEASED and not decision.rate_limited:
            self._record(delivery.id, decision, now)  # nothing was sent
        else:  # a rate-limit answer uses no attempt, but it is one on the record
            self._record(
                delivery.id,
                decision,
                now,
                attempt=self._attempt_row(delivery.sink, result),
                feed=self._feed_entry(item, decision, result, now),
                health=health,
            )
        if health is not None and not health.up:
            # this failure may have paused the sink for everyone: written now, not after
            # the linger, so the next claim already sees the circuit
            await self._outcomes.flush()
            self.board.invalidate()
        elif self._clock() > lease_ends - LEASE_MARGIN_S:
            # its lease is nearly out: written now, before anyone may claim it again
            # (a linger past the lease could get it sent twice)
            await self._outcomes.flush()
        self._report(delivery.sink, result, decision, now, bound)

    def _pause_left_s(self, sink: str) -> float:
        return self._paused_until.get(sink, 0.0) - self._clock()

    def _note_throttling(self, sink: str, result: AttemptResult) -> float:
        """Track the destination's rate limiting; return for how long it has lasted.

        A rate-limit answer pauses the sink until its ``Retry-After`` (deliveries claimed
        meanwhile go back untried) and starts the throttle clock if it is not running;
        any other answer from the destination stops the clock."""
        now = self._clock()
        if result.rate_limited:
            assert result.retry_after_s is not None
            until = now + result.retry_after_s
            self._paused_until[sink] = max(self._paused_until.get(sink, 0.0), until)
            return now - self._throttled_since.setdefault(sink, now)
        if not result.throttled:
            self._throttled_since.pop(sink, None)
        return 0.0

    async def _attempt(
        self, sink: Sink, event: Event, bound: structlog.BoundLogger
    ) -> AttemptResult:
        """Call the sink once; every failure becomes an ``AttemptResult``."""
        started_at = utcnow()
        started = time.perf_counter()
        try:
            raw = await sink.deliver(event)
        except DeliveryFailed as exc:
            failure = exc
        except Exception as exc:  # a sink bug must not kill the worker
            bound.exception("delivery.sink_crashed")
            failure = DeliveryFailed(f"sink error: {type(exc).__name__}")
        else:
            duration_s = time.perf_counter() - started
            if isinstance(raw, DeliveryNote):
                return AttemptResult(
                    ok=True,
                    started_at=started_at,
                    duration_s=duration_s,
                    status=raw.status,
                    note=raw.message,
                    note_reason=raw.reason,
                    response_body=raw.message.encode(),
                )
            answer = answer_of(raw)
            return AttemptResult(
                ok=True,
                started_at=started_at,
                duration_s=duration_s,
                status=answer.status,
                response_body=answer.body,
            )
        duration_s = time.perf_counter() - started
        result = AttemptResult.failed(failure, started_at=started_at, duration_s=duration_s)
        # a sink's message may quote the destination's answer, which may echo a secret:
        # what is kept (last_error, the attempt, the stream, the log) is redacted
        error = redact(result.error or "", self._secrets.get(sink.config.name, ()))
        return dataclasses.replace(result, error=error or result.error)

    def _record(
        self,
        delivery_id: str,
        decision: Decision,
        now: datetime | None = None,
        *,
        attempt: NewAttempt | None = None,
        feed: FeedEntry | None = None,
        health: HealthChange | None = None,
    ) -> None:
        """The one outcome per claim, queued: it is written with the others that are
        ready (``OUTCOME_LINGER_S``), and until then its lease keeps it from being claimed
        again. Nothing waits for it but ``drain``/``stop``, which flush."""
        outcome = DeliveryOutcome(
            delivery_id, decision, now or utcnow(), attempt=attempt, feed=feed, health=health
        )
        self._outcomes.add(outcome)

    def _attempt_row(self, sink: str, result: AttemptResult) -> NewAttempt:
        """The attempt as recorded: the destination's host only, a redacted excerpt."""
        return NewAttempt(
            started_at=result.started_at,
            duration_ms=result.duration_s * 1000,
            status=result.status,
            error=None if result.ok else (result.error or "delivery failed"),
            host=self._hosts.get(sink),
            response_excerpt=response_excerpt(result.response_body, self._secrets.get(sink, ())),
        )

    @staticmethod
    def _feed_entry(
        item: DueDelivery, decision: Decision, result: AttemptResult | None, now: datetime
    ) -> FeedEntry:
        """The stream's ``delivery.*`` entry for this outcome."""
        delivery: Delivery = item.delivery
        kind = {
            Disposition.DELIVERED: OutcomeType.DELIVERED,
            Disposition.RETRY: OutcomeType.RETRY_SCHEDULED,
            Disposition.RELEASED: OutcomeType.RETRY_SCHEDULED,  # rate limited: back later
        }.get(decision.disposition, OutcomeType.DEAD)
        return outcome_entry(
            kind,
            delivery,
            item.event,
            attempt=delivery.attempts + 1,
            status=decision.status if result is None else result.status,
            error=decision.error,
            duration_ms=None if result is None else result.duration_s * 1000,
            next_attempt_at=decision.at if kind is OutcomeType.RETRY_SCHEDULED else None,
            now=now,
        )

    def _report(
        self,
        sink: str,
        result: AttemptResult,
        decision: Decision,
        now: datetime,
        bound: structlog.BoundLogger,
    ) -> None:
        """One metric and one log line per attempt."""
        disposition = decision.disposition
        if disposition is Disposition.RELEASED:  # throttled: no attempt used
            retry_in_s = (decision.at - now).total_seconds() if decision.at else 0.0
            if decision.rate_limited:  # by the destination (429 + Retry-After)
                self.metrics.deliveries.labels(sink, "rate_limited").inc()
                bound.info(
                    "delivery.rate_limited",
                    status=decision.status,
                    retry_in_s=round(retry_in_s, 3),
                )
            else:  # by the sink's own pacing: nothing was sent
                bound.debug("delivery.throttled", retry_in_s=round(retry_in_s, 3))
            return
        self.metrics.deliveries.labels(sink, disposition.value).inc()
        if disposition is Disposition.DELIVERED:
            if result.note_reason is not None:
                self.metrics.delivery_notes.labels(sink, result.note_reason).inc()
            bound.info(
                "delivery.delivered",
                status=result.status,
                duration_ms=round(result.duration_s * 1000, 2),
                **({"note": result.note} if result.note else {}),
            )
        elif disposition is Disposition.RETRY:
            assert decision.at is not None
            bound.info(
                "delivery.retry_scheduled",
                status=decision.status,
                error=decision.error,
                retry_in_s=round((decision.at - now).total_seconds(), 3),
                circuit=self.board.state(sink).value,
            )
        else:
            bound.warning("delivery.dead", status=decision.status, error=decision.error)


def _record_failed(exc: Exception, count: int) -> None:
    """A batch of outcomes was not written: their leases run out and they are retried."""
    log.error("delivery.record_failed", deliveries=count, error=f"{type(exc).__name__}: {exc}")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _health_change(
    sink: str, threshold: int, result: AttemptResult, now: datetime
) -> HealthChange | None:
    """What the attempt says about the sink: up when it answered (even with a permanent
    error), down on a retryable failure; a throttled attempt (nothing sent) says nothing."""
    if result.throttled:
        return None
    verdict = result.verdict
    if verdict is Verdict.RETRY:
        return HealthChange(sink, False, result.error or "delivery failed", threshold, now)
    return HealthChange(
        sink, True, result.error if verdict is Verdict.DEAD else None, threshold, now
    )
