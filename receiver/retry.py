"""Retry policy: pure functions over a schedule (stamina's vocabulary, Standard Webhooks'
rules). The schedule is data in the store, so it survives restarts."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from receiver.errors import DeliveryFailed

MAX_RETRY_AFTER_S = 86400.0  # a sink asking for longer gets a day


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


def classify_status(status: int | None) -> Verdict:
    """2xx delivered; 408, 429, 5xx and no answer at all retry; 410 and other 4xx are dead."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (408, 429) or status >= 500:
        return Verdict.RETRY
    if 400 <= status < 500:
        return Verdict.DEAD
    return Verdict.RETRY


def classify(failure: DeliveryFailed) -> Verdict:
    """A sink's explicit ``permanent`` wins; otherwise classify by status."""
    if failure.permanent is True:
        return Verdict.DEAD
    if failure.permanent is False:
        return Verdict.RETRY
    return classify_status(failure.status)


def next_attempt_at(
    now: datetime,
    attempts_made: int,
    schedule_s: Sequence[float],
    *,
    jitter: float = 0.2,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to try again after ``attempts_made`` attempts, or None when exhausted.

    ``schedule_s[i]`` is the wait before attempt ``i + 1`` (``schedule_s[0]`` is the
    first attempt's, normally 0), so a schedule of n entries allows n attempts. The
    wait gets ±``jitter`` and is never shorter than the sink's ``Retry-After``.
    """
    if attempts_made >= len(schedule_s):
        return None
    base = schedule_s[attempts_made]
    spread = (rng or random).uniform(-jitter, jitter) if jitter else 0.0
    wait = max(0.0, base * (1 + spread))
    if retry_after_s is not None and math.isfinite(retry_after_s):
        wait = max(wait, min(retry_after_s, MAX_RETRY_AFTER_S))
    return now + timedelta(seconds=wait)
