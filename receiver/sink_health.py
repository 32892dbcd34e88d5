"""Sink health shared through the store: one circuit breaker per sink for every process.

The store keeps a ``sink_health`` row per sink that ever failed. Recording a delivery
outcome updates it in the same transaction (``HealthChange``): a retryable failure
counts, and after ``threshold`` in a row the circuit *pauses*: every worker stops
claiming that sink's deliveries (they stay pending, no retries burnt). After the probe
interval one worker, whichever wins ``Store.claim_probe``, sends a single delivery
(*probing*, under a lease so a dead prober is replaced); its success closes the
circuit everywhere, its failure pauses it again. Any answer from the sink, even a
permanent error, counts as the sink being up.

``SinkBoard`` is a worker's cached view of those rows (re-read a few times a second),
so the claim loop knows which sinks to skip and which to probe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from receiver.events import isoformat

if TYPE_CHECKING:
    from handlers.sinks.base import SinkConfig
    from receiver.store import Store

REFRESH_S = 0.25


class HealthState(StrEnum):
    OK = "ok"
    PAUSED = "paused"
    PROBING = "probing"


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """A sink's shared circuit. ``failures`` counts retryable failures in a row;
    ``opened_at`` is when it last paused; ``probe_until`` the probing worker's lease."""

    sink: str
    state: HealthState = HealthState.OK
    failures: int = 0
    opened_at: datetime | None = None
    last_error: str | None = None
    probe_owner: str | None = None
    probe_until: datetime | None = None
    opened_count: int = 0
    closed_count: int = 0
    updated_at: datetime | None = None

    def probe_due(self, now: datetime, probe_interval_s: float) -> bool:
        """Whether a worker may claim a probe now: paused for the probe interval, or
        probing with the prober's lease run out."""
        if self.state is HealthState.PAUSED:
            return self.opened_at is None or now - self.opened_at >= timedelta(
                seconds=probe_interval_s
            )
        if self.state is HealthState.PROBING:
            return self.probe_until is None or self.probe_until <= now
        return False

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "failures": self.failures,
            "last_error": self.last_error,
            "opened_at": isoformat(self.opened_at),
            "circuit_opened": self.opened_count,
            "circuit_closed": self.closed_count,
        }


@dataclass(frozen=True, slots=True)
class HealthChange:
    """What one attempt says about its sink, recorded with the outcome. ``up``: the
    sink answered (delivered, or a permanent error kept as ``error``); otherwise a
    retryable failure, which pauses the circuit at the ``threshold``-th in a row (or
    at once when the circuit was probing)."""

    sink: str
    up: bool
    error: str | None
    threshold: int
    now: datetime


def apply_change(health: SinkHealth, change: HealthChange) -> SinkHealth:
    """The row after ``change`` (the reference the stores' SQL follows)."""
    if change.up:
        reopened = health.state is not HealthState.OK
        return SinkHealth(
            sink=health.sink,
            state=HealthState.OK,
            failures=0,
            opened_at=health.opened_at,
            last_error=change.error if change.error is not None else health.last_error,
            opened_count=health.opened_count,
            closed_count=health.closed_count + (1 if reopened else 0),
            updated_at=change.now,
        )
    failures = health.failures + 1
    opens = health.state is HealthState.OK and failures >= change.threshold
    pause = opens or health.state is HealthState.PROBING
    return SinkHealth(
        sink=health.sink,
        state=HealthState.PAUSED if pause else health.state,
        failures=failures,
        opened_at=change.now if pause else health.opened_at,
        last_error=change.error,
        probe_owner=None if pause else health.probe_owner,
        probe_until=None if pause else health.probe_until,
        opened_count=health.opened_count + (1 if opens else 0),
        closed_count=health.closed_count,
        updated_at=change.now,
    )


class SinkBoard:
    """A worker's view of every sink's shared circuit, re-read from the store at most
    every ``refresh_s`` (at once after ``invalidate``)."""

    def __init__(
        self,
        store: Store,
        sinks: Mapping[str, SinkConfig],
        *,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._store = store
        self._sinks = sinks
        self._refresh_s = refresh_s
        self._rows: dict[str, SinkHealth] = {}
        self._read_at = float("-inf")

    async def refresh(self) -> None:
        """Re-read the rows when the cached ones are older than ``refresh_s``."""
        if time.monotonic() - self._read_at < self._refresh_s:
            return
        self._rows = await self._store.sink_health()
        self._read_at = time.monotonic()

    def invalidate(self) -> None:
        """The next ``refresh`` reads the store (this worker just changed a row)."""
        self._read_at = float("-inf")

    def health(self, sink: str) -> SinkHealth:
        return self._rows.get(sink) or SinkHealth(sink)

    def state(self, sink: str) -> HealthState:
        return self.health(sink).state

    def blocked(self) -> list[str]:
        """Sinks whose deliveries no worker claims normally (paused or probing)."""
        return [name for name, row in self._rows.items() if row.state is not HealthState.OK]

    def probe_candidates(self, now: datetime) -> list[str]:
        """Configured sinks whose circuit may be probed now."""
        return [
            name
            for name, config in self._sinks.items()
            if self.health(name).probe_due(now, config.circuit_probe_interval_s)
        ]
