"""Retry policy: classification by status and the pure schedule function."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from receiver.errors import DeliveryFailed
from receiver.retry import Verdict, classify, classify_status, next_attempt_at

NOW = datetime(2026, 11, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (400, Verdict.DEAD),
        (404, Verdict.DEAD),
        (410, Verdict.DEAD),
    ],
)
def test_classify_status(status: int | None, verdict: Verdict) -> None:
    """2xx ok; 408/429/5xx/no answer retry; 410 and other 4xx dead."""
    assert classify_status(status) is verdict


def test_explicit_permanence_wins() -> None:
    """A sink's permanent flag overrides the status rule both ways."""
    assert classify(DeliveryFailed("x", status=500, permanent=True)) is Verdict.DEAD
    assert classify(DeliveryFailed("x", status=400, permanent=False)) is Verdict.RETRY
    assert classify(DeliveryFailed("x", status=503)) is Verdict.RETRY


def test_schedule_walks_and_exhausts() -> None:
    """Without jitter the n-th wait is schedule[n]; past the end there is none."""
    schedule = (0, 5, 300)
    assert next_attempt_at(NOW, 1, schedule, jitter=0) == NOW + timedelta(seconds=5)
    assert next_attempt_at(NOW, 2, schedule, jitter=0) == NOW + timedelta(seconds=300)
    assert next_attempt_at(NOW, 3, schedule, jitter=0) is None


def test_jitter_stays_within_twenty_percent() -> None:
    """Jittered waits stay within ±20 % of the schedule."""
    rng = random.Random(7)
    for _ in range(200):
        when = next_attempt_at(NOW, 1, (0, 100), jitter=0.2, rng=rng)
        assert when is not None
        assert 80 <= (when - NOW).total_seconds() <= 120


def test_retry_after_is_a_floor() -> None:
    """A sink's Retry-After is honoured when longer than the schedule's wait."""
    when = next_attempt_at(NOW, 1, (0, 1), jitter=0, retry_after_s=30)
    assert when == NOW + timedelta(seconds=30)


def test_absurd_retry_after_is_capped_or_ignored() -> None:
    """An infinite Retry-After is ignored and a huge one waits at most a day."""
    assert next_attempt_at(NOW, 1, (0, 1), jitter=0, retry_after_s=float("inf")) == NOW + timedelta(
        seconds=1
    )
    assert next_attempt_at(NOW, 1, (0, 1), jitter=0, retry_after_s=1e20) == NOW + timedelta(days=1)
