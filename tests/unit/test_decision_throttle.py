"""``decide`` for rate-limit answers: throttling is not failure, up to the budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from receiver.decision import DEFAULT_THROTTLE_BUDGET_S, AttemptResult, Disposition, decide
from receiver.errors import ConfigError, DeliveryFailed
from receiver.settings import load_settings

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
SCHEDULE = (0.0, 5.0, 300.0, 1800.0)


def rate_limited(retry_after_s: float | None = 1.0, status: int = 429) -> AttemptResult:
    failure = DeliveryFailed("rate_limited", status=status, retry_after_s=retry_after_s)
    return AttemptResult.failed(failure, started_at=NOW, duration_s=0.01)


def test_the_default_budget_is_an_hour() -> None:
    assert DEFAULT_THROTTLE_BUDGET_S == 3600.0


@pytest.mark.parametrize("attempts_made", [0, 1, 3])
@pytest.mark.parametrize("throttled_for_s", [0.0, 59.0, 3600.0])
def test_within_the_budget_a_429_reschedules_at_retry_after_without_an_attempt(
    attempts_made: int, throttled_for_s: float
) -> None:
    """Even on the schedule's last attempt: a 429 is no failure, nothing is used up."""
    decision = decide(
        rate_limited(1.0),
        attempts_made=attempts_made,
        schedule_s=SCHEDULE,
        now=NOW,
        jitter=0,
        throttled_for_s=throttled_for_s,
        throttle_budget_s=3600.0,
    )
    assert decision.disposition is Disposition.RELEASED
    assert decision.rate_limited
    assert not decision.counts_attempt
    assert decision.at == NOW + timedelta(seconds=1)  # Retry-After, not the schedule's 300 s
    assert decision.status == 429


def test_past_the_budget_a_429_spends_attempts_like_any_failure() -> None:
    decision = decide(
        rate_limited(1.0),
        attempts_made=1,
        schedule_s=SCHEDULE,
        now=NOW,
        jitter=0,
        throttled_for_s=3600.5,
        throttle_budget_s=3600.0,
    )
    assert decision.disposition is Disposition.RETRY
    assert decision.counts_attempt
    assert decision.at == NOW + timedelta(seconds=300)
    exhausted = decide(
        rate_limited(1.0),
        attempts_made=len(SCHEDULE) - 1,
        schedule_s=SCHEDULE,
        now=NOW,
        jitter=0,
        throttled_for_s=7200.0,
        throttle_budget_s=3600.0,
    )
    assert exhausted.disposition is Disposition.DEAD


def test_a_zero_budget_spends_attempts_from_the_second_429_on() -> None:
    def at(throttled_for_s: float) -> Disposition:
        return decide(
            rate_limited(2.0),
            attempts_made=0,
            schedule_s=SCHEDULE,
            now=NOW,
            throttled_for_s=throttled_for_s,
            throttle_budget_s=0.0,
        ).disposition

    assert at(0.0) is Disposition.RELEASED  # the first 429 starts the clock
    assert at(0.1) is Disposition.RETRY


def test_a_429_without_retry_after_is_an_ordinary_failure() -> None:
    decision = decide(rate_limited(None), attempts_made=0, schedule_s=SCHEDULE, now=NOW, jitter=0)
    assert decision.disposition is Disposition.RETRY
    assert decision.at == NOW + timedelta(seconds=5)


def test_other_failures_with_retry_after_still_spend_attempts() -> None:
    decision = decide(
        rate_limited(1.0, status=503), attempts_made=0, schedule_s=SCHEDULE, now=NOW, jitter=0
    )
    assert decision.disposition is Disposition.RETRY
    assert decision.counts_attempt


def test_a_huge_retry_after_is_capped_at_a_day() -> None:
    decision = decide(rate_limited(10.0**9), attempts_made=0, schedule_s=SCHEDULE, now=NOW)
    assert decision.at == NOW + timedelta(days=1)


def test_throttle_budget_is_read_from_the_delivery_table() -> None:
    env = {"RELAY_SECRET_KEY": "k" * 16, "RELAY_API_TOKEN": "t" * 16}
    assert load_settings(env, config_text="").throttle_budget_s == 3600.0
    text = "[delivery]\nthrottle_budget_s = 90\n"
    assert load_settings(env, config_text=text).throttle_budget_s == 90.0
    with pytest.raises(ConfigError, match="throttle_budget_s"):
        load_settings(env, config_text="[delivery]\nthrottle_budget_s = -1\n")
