"""``decide``: an attempt's result → delivered / retry at / dead / released (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from receiver.decision import AttemptResult, Decision, Disposition, decide
from receiver.errors import DeliveryFailed
from receiver.events import DeliveryState

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
SCHEDULE = (0.0, 10.0, 60.0)


def failed(**kwargs: object) -> AttemptResult:
    failure = DeliveryFailed(str(kwargs.pop("message", "boom")), **kwargs)  # type: ignore[arg-type]
    return AttemptResult.failed(failure, started_at=NOW, duration_s=0.1)


def decided(result: AttemptResult, attempts_made: int = 0) -> Decision:
    return decide(result, attempts_made=attempts_made, schedule_s=SCHEDULE, now=NOW, jitter=0)


def test_success_is_delivered_with_the_status_the_sink_had() -> None:
    http = AttemptResult(ok=True, started_at=NOW, duration_s=0.01, status=204)
    assert decided(http) == Decision(Disposition.DELIVERED, status=204)
    file = AttemptResult(ok=True, started_at=NOW, duration_s=0.01)
    assert decided(file) == Decision(Disposition.DELIVERED, status=None)
    assert decided(file).state is DeliveryState.DELIVERED


@pytest.mark.parametrize("status", [None, 408, 429, 500, 503])
def test_retryable_failures_retry_on_the_schedule(status: int | None) -> None:
    decision = decided(failed(message="down", status=status), attempts_made=1)
    assert decision == Decision(
        Disposition.RETRY, at=NOW + timedelta(seconds=60), status=status, error="down"
    )
    assert (decision.state, decision.counts_attempt) == (DeliveryState.PENDING, True)


def test_retry_never_comes_before_the_sinks_retry_after() -> None:
    decision = decided(failed(status=429, retry_after_s=120.0))
    assert decision.at == NOW + timedelta(seconds=120)


def test_jitter_comes_from_the_given_rng() -> None:
    result = failed(status=503)
    one = decide(
        result, attempts_made=0, schedule_s=SCHEDULE, now=NOW, jitter=0.2, rng=random.Random(7)
    )
    two = decide(
        result, attempts_made=0, schedule_s=SCHEDULE, now=NOW, jitter=0.2, rng=random.Random(7)
    )
    assert one == two
    assert one.at is not None
    assert timedelta(seconds=8) <= one.at - NOW <= timedelta(seconds=12)


def test_exhausted_schedule_is_dead() -> None:
    decision = decided(failed(message="HTTP 503", status=503), attempts_made=2)
    assert decision == Decision(Disposition.DEAD, status=503, error="retries exhausted: HTTP 503")


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [({"status": 410}, 410), ({"status": 400}, 400), ({"permanent": True, "status": 500}, 500)],
)
def test_permanent_failures_are_dead_at_once(kwargs: dict[str, object], status: int) -> None:
    decision = decided(failed(message="no", **kwargs))
    assert decision == Decision(Disposition.DEAD, status=status, error="no")
    assert decision.state is DeliveryState.DEAD


def test_permanent_false_retries_whatever_the_status() -> None:
    assert decided(failed(status=400, permanent=False)).disposition is Disposition.RETRY


def test_throttled_is_released_without_using_an_attempt() -> None:
    decision = decided(failed(throttled=True, retry_after_s=2.5), attempts_made=2)
    assert decision == Decision(Disposition.RELEASED, at=NOW + timedelta(seconds=2.5))
    assert (decision.counts_attempt, decision.state) == (False, DeliveryState.PENDING)
