"""The delivery worker: claim due deliveries, deliver, then mark, reschedule or
dead-letter them. Per-sink concurrency limits and circuit breakers live here too."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

import structlog

from receiver.errors import DeliveryFailed
from receiver.events import DueDelivery, utcnow
from receiver.retry import Verdict, classify, next_attempt_at
from receiver.runtime import Relay

log = structlog.get_logger("relay.worker")

IDLE_WAIT_S = 1.0
STORE_ERROR_BACKOFF_S = 1.0
BLOCKED_WAIT_S = 0.25  # due work exists but is paused or leased elsewhere


class CircuitState(StrEnum):
    OK = "ok"
    PAUSED = "paused"
    PROBING = "probing"


@dataclass(slots=True)
class Circuit:
    """Consecutive-failure breaker for one sink. While paused, the sink's deliveries stay
    pending (not claimed, no retries burnt); after the probe interval a single delivery
    probes it: success closes the circuit and the backlog drains, failure pauses again."""

    threshold: int
    probe_interval_s: float
    state: CircuitState = CircuitState.OK
    failures: int = 0
    opened_at: float = 0.0
    last_error: str | None = None
    probe_in_flight: bool = False
    opened_count: int = 0
    closed_count: int = 0

    def refresh(self, now: float) -> None:
        """Move a paused circuit to probing once its probe interval has passed."""
        if self.state is CircuitState.PAUSED and now - self.opened_at >= self.probe_interval_s:
            self.state = CircuitState.PROBING

    def success(self) -> None:
        """The sink answered (even with a permanent error): it is up."""
        if self.state is not CircuitState.OK:
            self.closed_count += 1
        self.state = CircuitState.OK
        self.failures = 0
        self.probe_in_flight = False

    def failure(self, error: str, now: float) -> None:
        self.failures += 1
        self.last_error = error
        self.probe_in_flight = False
        if self.state is CircuitState.PROBING or (
            self.state is CircuitState.OK and self.failures >= self.threshold
        ):
            if self.state is CircuitState.OK:
                self.opened_count += 1
            self.state = CircuitState.PAUSED
            self.opened_at = now


@dataclass(slots=True)
class DeliveryWorker:
    """Runs deliveries for every sink of one relay. ``run()`` forever (in-process or
    ``relay worker``), ``drain(budget_s)`` until nothing is due (``--once``, inline)."""

    relay: Relay
    batch: int = 64
    owner: str = field(default_factory=lambda: "w-" + secrets.token_hex(4))
    grace_s: float = 0.0
    circuits: dict[str, Circuit] = field(default_factory=dict)
    _semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        for name, sink in self.relay.sinks.items():
            config = sink.config
            self.circuits[name] = Circuit(
                config.circuit_failure_threshold, config.circuit_probe_interval_s
            )
            self._semaphores[name] = asyncio.Semaphore(config.max_concurrency)

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
                    await self.relay.store.wait_for_work(await self._idle_wait_s())
            except asyncio.CancelledError:
                raise
            except Exception:
                # a store hiccup (locked SQLite file, PostgreSQL failover) must not end
                # delivery for good: log, back off, try again
                log.exception("worker.loop_failed")
                await asyncio.sleep(STORE_ERROR_BACKOFF_S)

    async def _idle_wait_s(self) -> float:
        due = await self.relay.store.next_due_at()
        if due is None:
            return IDLE_WAIT_S
        wait = (due - utcnow()).total_seconds()
        return BLOCKED_WAIT_S if wait <= 0 else min(IDLE_WAIT_S, wait)

    async def _claim_and_start(self) -> int:
        room = self.batch - len(self._in_flight)
        if room <= 0:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            return 1
        now_m = time.monotonic()
        for circuit in self.circuits.values():
            circuit.refresh(now_m)
        not_ok = [n for n, c in self.circuits.items() if c.state is not CircuitState.OK]
        claim = self.relay.store.claim_due
        lease_s = self.relay.settings.lease_s
        lease_ends = time.monotonic() + lease_s  # no later than the store's lease_until
        due = await claim(
            utcnow(), limit=room, lease_s=lease_s, owner=self.owner, exclude_sinks=not_ok
        )
        for name, circuit in self.circuits.items():
            if circuit.state is CircuitState.PROBING and not circuit.probe_in_flight:
                others = [n for n in self.circuits if n != name]
                probe = await claim(
                    utcnow(), limit=1, lease_s=lease_s, owner=self.owner, exclude_sinks=others
                )
                circuit.probe_in_flight = bool(probe)
                due += probe
        for item in due:
            task = asyncio.create_task(self._deliver(item, lease_ends))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(due)

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
                await asyncio.wait(
                    self._in_flight,
                    timeout=max(0.0, deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
        if self._in_flight:
            # out of budget: leave the rest to the lease expiry / next run
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        return attempted

    async def stop(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _deliver(self, item: DueDelivery, lease_ends: float) -> None:
        try:
            await self._deliver_one(item, lease_ends)
        except asyncio.CancelledError:
            raise
        except Exception:
            # recording the outcome failed: the lease runs out and the delivery is retried
            log.exception("delivery.record_failed", delivery_id=item.delivery.id)

    async def _deliver_one(self, item: DueDelivery, lease_ends: float) -> None:
        delivery, event = item.delivery, item.event
        store = self.relay.store
        sink = self.relay.sinks.get(delivery.sink)
        bound = log.bind(
            delivery_id=delivery.id,
            event_id=event.id,
            sink=delivery.sink,
            attempt=delivery.attempts + 1,
        )
        if sink is None:
            await store.mark_dead(
                delivery.id,
                status=None,
                error=f"sink {delivery.sink!r} is no longer configured",
                now=utcnow(),
            )
            bound.warning("delivery.dead", reason="sink_not_configured")
            return
        circuit = self.circuits[delivery.sink]
        slots = self._semaphores[delivery.sink]
        waited = slots.locked()
        async with slots:
            # A claim may wait here for a free slot. After a wait, send only if the lease
            # outlasts the send: once it runs out, the delivery can be claimed again (by
            # any worker, this one included) and that claim sends it; sending it here too
            # would deliver it twice. Left alone, it is re-claimed when the lease expires.
            margin_s = min(sink.config.timeout_s, self.relay.settings.lease_s / 2)
            if waited and time.monotonic() > lease_ends - margin_s:
                circuit.probe_in_flight = False  # if this was the probe, it never went out
                bound.info("delivery.lease_expired_waiting")
                return
            if circuit.state is CircuitState.PAUSED:
                # claimed before the circuit opened: put it back untried
                await store.release(delivery.id, next_attempt_at=utcnow())
                return
            started = time.perf_counter()
            try:
                await sink.deliver(event)
            except DeliveryFailed as exc:
                failure: DeliveryFailed | None = exc
            except Exception as exc:  # a sink bug must not kill the worker
                bound.exception("delivery.sink_crashed")
                failure = DeliveryFailed(f"sink error: {type(exc).__name__}")
            else:
                failure = None
            elapsed = time.perf_counter() - started
        self.relay.metrics.delivery_seconds.labels(delivery.sink).observe(elapsed)
        now = utcnow()
        if failure is None:
            circuit.success()
            await store.mark_delivered(delivery.id, status=200, now=now)
            self.relay.metrics.deliveries.labels(delivery.sink, "delivered").inc()
            bound.info("delivery.delivered", duration_ms=round(elapsed * 1000, 2))
            return
        if failure.throttled:
            # held back by the sink's own pacing: nothing was sent, no attempt used
            wait_s = failure.retry_after_s or BLOCKED_WAIT_S
            await store.release(delivery.id, next_attempt_at=now + timedelta(seconds=wait_s))
            bound.debug("delivery.throttled", retry_in_s=round(wait_s, 3))
            return
        verdict = classify(failure)
        if verdict is Verdict.RETRY:
            circuit.failure(failure.message, time.monotonic())
            config = sink.config
            schedule = config.retry_schedule_s or self.relay.settings.retry_schedule_s
            when = next_attempt_at(
                now,
                delivery.attempts + 1,
                schedule,
                jitter=self.relay.settings.retry_jitter,
                retry_after_s=failure.retry_after_s,
            )
            if when is not None:
                await store.schedule_retry(
                    delivery.id,
                    next_attempt_at=when,
                    status=failure.status,
                    error=failure.message,
                    now=now,
                )
                self.relay.metrics.deliveries.labels(delivery.sink, "retry").inc()
                bound.info(
                    "delivery.retry_scheduled",
                    status=failure.status,
                    error=failure.message,
                    retry_in_s=round((when - now).total_seconds(), 3),
                    circuit=circuit.state.value,
                )
                return
            message = f"retries exhausted: {failure.message}"
        else:
            circuit.success()
            circuit.last_error = failure.message
            message = failure.message
        await store.mark_dead(delivery.id, status=failure.status, error=message, now=now)
        self.relay.metrics.deliveries.labels(delivery.sink, "dead").inc()
        bound.warning("delivery.dead", status=failure.status, error=message)
