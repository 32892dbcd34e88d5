"""Prometheus metrics, one registry per app instance (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.callbacks = Counter(
            "relay_callbacks_total",
            "Provider callbacks by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "relay_events_total", "Events recorded", ["provider", "type"], registry=self.registry
        )
        self.submissions = Counter(
            "relay_submissions_total",
            "Upscale submissions by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "relay_delivery_attempts_total",
            "Delivery attempts by sink and outcome",
            ["sink", "outcome"],
            registry=self.registry,
        )
        self.delivery_notes = Counter(
            "relay_delivery_notes_total",
            "Delivered attempts that skipped part of the work on purpose, by sink and reason"
            " (image_refused_loopback … : an image URL the SSRF guard refused)",
            ["sink", "reason"],
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "relay_delivery_seconds",
            "Time one delivery attempt took",
            ["sink"],
            registry=self.registry,
        )
        self.polls = Counter(
            "relay_polls_total",
            "Provider polls by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
