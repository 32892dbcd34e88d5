"""``Circuit``: the consecutive-failure breaker the delivery worker keeps per sink."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class CircuitState(StrEnum):
    OK = "ok"
    PAUSED = "paused"
    PROBING = "probing"


@dataclass(slots=True)
class Circuit:
    """Consecutive-failure breaker for one sink. While paused, the sink's deliveries stay
    pending (not claimed, no retries burnt); after the probe interval a single delivery
    probes it: success closes the circuit and the backlog drains, failure pauses again.

    ``clock`` is a monotonic clock in seconds (injectable for tests).
    """

    threshold: int
    probe_interval_s: float
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    state: CircuitState = CircuitState.OK
    failures: int = 0
    opened_at: float = 0.0
    last_error: str | None = None
    probe_in_flight: bool = False
    opened_count: int = 0
    closed_count: int = 0

    def refresh(self) -> None:
        """Move a paused circuit to probing once its probe interval has passed."""
        if (
            self.state is CircuitState.PAUSED
            and self.clock() - self.opened_at >= self.probe_interval_s
        ):
            self.state = CircuitState.PROBING

    def success(self, error: str | None = None) -> None:
        """The sink answered: it is up. ``error`` is a permanent error it answered with
        (the sink is up, the event is not deliverable), kept as ``last_error``."""
        if self.state is not CircuitState.OK:
            self.closed_count += 1
        self.state = CircuitState.OK
        self.failures = 0
        self.probe_in_flight = False
        if error is not None:
            self.last_error = error

    def failure(self, error: str) -> None:
        """The sink is down (a retryable failure); pauses after ``threshold`` in a row,
        or at once when this was the probe."""
        self.failures += 1
        self.last_error = error
        self.probe_in_flight = False
        if self.state is CircuitState.PROBING or (
            self.state is CircuitState.OK and self.failures >= self.threshold
        ):
            if self.state is CircuitState.OK:
                self.opened_count += 1
            self.state = CircuitState.PAUSED
            self.opened_at = self.clock()
