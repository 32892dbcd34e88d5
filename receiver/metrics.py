"""Prometheus metrics, one registry per app instance (tests build many apps).

Counters and histograms count what this process did. The gauges people alert on —
backlog, dead letters, the age of the oldest pending delivery and each sink's circuit
— describe the shared store, so ``refresh`` reads them from it at scrape time and
every process reports the same values (alert on ``max`` across instances).

prometheus_client is imported when the first ``Metrics`` is built (in the lifespan), not
by ``import receiver.app``: a cold start does not pay for it before it serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from receiver.store import Store

JOB_BUCKETS_S = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
CALLBACK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CIRCUIT_STATES = ("ok", "paused", "probing")


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        registry = self.registry
        self.callbacks = Counter(
            "relay_callbacks_total",
            "Provider callbacks by provider and outcome",
            ["provider", "outcome"],
            registry=registry,
        )
        self.callback_seconds = Histogram(
            "relay_callback_duration_seconds",
            "Time to handle one provider callback, from request to answer",
            ["provider"],
            buckets=CALLBACK_BUCKETS_S,
            registry=registry,
        )
        self.events = Counter(
            "relay_events_total", "Events recorded", ["provider", "type"], registry=registry
        )
        self.submissions = Counter(
            "relay_submissions_total",
            "Upscale submissions by provider and outcome",
            ["provider", "outcome"],
            registry=registry,
        )
        self.job_seconds = Histogram(
            "relay_job_duration_seconds",
            "Time from a job's creation to its terminal event, by provider and final status",
            ["provider", "status"],
            buckets=JOB_BUCKETS_S,
            registry=registry,
        )
        self.deliveries = Counter(
            "relay_delivery_attempts_total",
            "Delivery attempts by sink and outcome",
            ["sink", "outcome"],
            registry=registry,
        )
        self.delivery_notes = Counter(
            "relay_delivery_notes_total",
            "Delivered attempts that skipped part of the work on purpose, by sink and reason"
            " (image_refused_loopback … : an image URL the SSRF guard refused)",
            ["sink", "reason"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "relay_delivery_seconds",
            "Time one delivery attempt took",
            ["sink"],
            registry=registry,
        )
        self.polls = Counter(
            "relay_polls_total",
            "Provider polls by provider and outcome",
            ["provider", "outcome"],
            registry=registry,
        )
        self.backlog = Gauge(
            "relay_sink_backlog",
            "Pending deliveries per sink (due now or scheduled for a retry)",
            ["sink"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "relay_sink_dead_letters",
            "Dead-lettered deliveries per sink, until replayed or pruned",
            ["sink"],
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "relay_sink_oldest_pending_age_seconds",
            "Age of the oldest pending delivery per sink (0 when none is pending)",
            ["sink"],
            registry=registry,
        )
        self.circuit = Gauge(
            "relay_sink_circuit",
            "1 for the state each sink's shared circuit is in (ok, paused, probing)",
            ["sink", "state"],
            registry=registry,
        )

    def observe_job(
        self, provider: str, status: str, created_at: datetime, finished_at: datetime
    ) -> None:
        """A job reached a terminal status (``completed`` / ``failed``)."""
        seconds = max(0.0, (finished_at - created_at).total_seconds())
        self.job_seconds.labels(provider, status).observe(seconds)

    async def refresh(self, store: Store, sinks: Iterable[str], now: datetime) -> None:
        """Set the store-wide gauges (every configured sink appears, zero or not)."""
        stats = await store.delivery_stats()
        health = await store.sink_health()
        for name in sorted(set(sinks) | set(stats)):
            row = stats.get(name)
            self.backlog.labels(name).set(row.pending if row else 0)
            self.dead_letters.labels(name).set(row.dead if row else 0)
            oldest = row.oldest_pending_at if row else None
            age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
            self.oldest_pending.labels(name).set(age)
            state = health[name].state.value if name in health else "ok"
            for candidate in CIRCUIT_STATES:
                self.circuit.labels(name, candidate).set(1 if candidate == state else 0)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
