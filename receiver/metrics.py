"""Prometheus metrics, one registry per app instance (tests build many apps).

prometheus_client is imported when the first ``Metrics`` is built (in the lifespan), not
by ``import receiver.app``: a cold start does not pay for it before it serves."""

from __future__ import annotations


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

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

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
