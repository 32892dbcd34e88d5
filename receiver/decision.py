"""What one delivery attempt means for its delivery: a pure function beside ``retry``.

The worker *attempts* (calls the sink, gets an ``AttemptResult``), *decides* (``decide``:
attempt + attempts made + schedule + now → ``Decision``) and *records* (one store call,
``Store.record_outcome``). Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from receiver.errors import DeliveryFailed
from receiver.events import DeliveryState
from receiver.retry import MAX_RETRY_AFTER_S, Verdict, classify_status, next_attempt_at

THROTTLE_WAIT_S = 0.25  # a throttled sink that named no wait is asked again this soon
#: ``[delivery] throttle_budget_s``: how long a destination may keep answering 429 before
#: its rate-limit answers start using up attempts of the retry schedule
DEFAULT_THROTTLE_BUDGET_S = 3600.0


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What calling the sink once gave. ``ok`` with the status the destination answered
    (None where it has none: a file, S3); otherwise the failure's status, error,
    ``permanent`` hint and ``retry_after_s``. ``throttled``: the sink held the event back
    itself and sent nothing."""

    ok: bool
    started_at: datetime
    duration_s: float
    status: int | None = None
    error: str | None = None
    permanent: bool | None = None
    retry_after_s: float | None = None
    throttled: bool = False
    #: a delivered attempt that skipped part of the work on purpose (``DeliveryNote``)
    note: str | None = None
    note_reason: str | None = None
    response_body: bytes | None = None  # the start of what the destination answered

    @classmethod
    def failed(
        cls, failure: DeliveryFailed, *, started_at: datetime, duration_s: float
    ) -> AttemptResult:
        return cls(
            ok=False,
            started_at=started_at,
            duration_s=duration_s,
            status=failure.status,
            error=failure.message,
            permanent=failure.permanent,
            retry_after_s=failure.retry_after_s,
            throttled=failure.throttled,
            response_body=failure.response_body,
        )

    @property
    def rate_limited(self) -> bool:
        """The destination said "slow down": a 429 (Slack's and Discord's rate-limit
        answers included) naming when to come back (``Retry-After``)."""
        return (
            not self.ok
            and not self.throttled
            and self.status == 429
            and self.retry_after_s is not None
        )

    @property
    def verdict(self) -> Verdict:
        """Delivered, worth retrying (the sink is down or busy) or dead (permanent)."""
        if self.ok:
            return Verdict.DELIVERED
        if self.permanent is True:
            return Verdict.DEAD
        if self.permanent is False:
            return Verdict.RETRY
        # a "failure" with a 2xx status is not retried either (nothing to fix by resending)
        return Verdict.RETRY if classify_status(self.status) is Verdict.RETRY else Verdict.DEAD


class Disposition(StrEnum):
    """What becomes of a leased delivery."""

    DELIVERED = "delivered"  # done
    RETRY = "retry"  # pending again at ``Decision.at``; one attempt used
    DEAD = "dead"  # dead-lettered
    RELEASED = "released"  # put back untried, due at ``Decision.at``; no attempt used


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome to record: ``disposition``, when the delivery is due again (``at``,
    for retry and released) and the status/error it keeps as ``last_*``."""

    disposition: Disposition
    at: datetime | None = None
    status: int | None = None
    error: str | None = None
    #: released because the destination rate-limited us (not by the sink's own pacing)
    rate_limited: bool = False

    @property
    def state(self) -> DeliveryState:
        """The delivery's state afterwards."""
        if self.disposition is Disposition.DELIVERED:
            return DeliveryState.DELIVERED
        if self.disposition is Disposition.DEAD:
            return DeliveryState.DEAD
        return DeliveryState.PENDING

    @property
    def counts_attempt(self) -> bool:
        """Every disposition but ``released`` used up one attempt."""
        return self.disposition is not Disposition.RELEASED

    @property
    def requeued(self) -> bool:
        """The delivery is pending again (a worker should look at it)."""
        return self.state is DeliveryState.PENDING

    @classmethod
    def delivered(cls, status: int | None, note: str | None = None) -> Decision:
        """Done; ``note`` (what the sink skipped on purpose) is kept as ``last_error``."""
        return cls(Disposition.DELIVERED, status=status, error=note)

    @classmethod
    def dead(cls, status: int | None, error: str) -> Decision:
        return cls(Disposition.DEAD, status=status, error=error)

    @classmethod
    def released(cls, at: datetime) -> Decision:
        return cls(Disposition.RELEASED, at=at)

    @classmethod
    def rate_limited_until(cls, at: datetime, status: int | None, error: str) -> Decision:
        """Back in the queue at ``at`` (the destination's ``Retry-After``), no attempt
        used: throttling is not failure."""
        return cls(Disposition.RELEASED, at=at, status=status, error=error, rate_limited=True)

    @classmethod
    def retry(cls, at: datetime, status: int | None, error: str) -> Decision:
        return cls(Disposition.RETRY, at=at, status=status, error=error)


def decide(
    result: AttemptResult,
    *,
    attempts_made: int,
    schedule_s: Sequence[float],
    now: datetime,
    jitter: float = 0.2,
    rng: random.Random | None = None,
    throttled_for_s: float = 0.0,
    throttle_budget_s: float = DEFAULT_THROTTLE_BUDGET_S,
) -> Decision:
    """The ``Decision`` for ``result`` of a delivery that had ``attempts_made`` attempts
    before this one: delivered; released (throttled by the sink's own pacing, or
    rate-limited by the destination: no attempt used); retry at the schedule's next
    time (never before the sink's ``Retry-After``); or dead when the failure is
    permanent or the schedule is used up.

    A rate-limit answer (``result.rate_limited``) reschedules at its ``Retry-After``
    without using an attempt while the destination has been throttling for at most
    ``throttle_budget_s`` (``throttled_for_s``, measured by the caller from the first
    rate-limit answer since the destination last answered anything else); past the
    budget it is a failure like any other and spends attempts."""
    if result.ok:
        return Decision.delivered(result.status, result.note)
    if result.throttled:
        wait_s = result.retry_after_s or THROTTLE_WAIT_S
        return Decision.released(now + timedelta(seconds=wait_s))
    error = result.error or "delivery failed"
    if result.rate_limited and throttled_for_s <= throttle_budget_s:
        assert result.retry_after_s is not None
        wait_s = min(max(result.retry_after_s, THROTTLE_WAIT_S), MAX_RETRY_AFTER_S)
        return Decision.rate_limited_until(now + timedelta(seconds=wait_s), result.status, error)
    if result.verdict is Verdict.DEAD:
        return Decision.dead(result.status, error)
    when = next_attempt_at(
        now,
        attempts_made + 1,
        schedule_s,
        jitter=jitter,
        retry_after_s=result.retry_after_s,
        rng=rng,
    )
    if when is None:
        return Decision.dead(result.status, f"retries exhausted: {error}")
    return Decision.retry(when, result.status, error)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The relay-wide retry schedule, jitter and throttle budget (``[delivery]``); a
    sink's own ``retry_schedule_s`` replaces the schedule for that sink."""

    schedule_s: tuple[float, ...]
    jitter: float = 0.2
    throttle_budget_s: float = DEFAULT_THROTTLE_BUDGET_S

    def schedule_for(self, sink_schedule_s: Sequence[float] | None) -> Sequence[float]:
        return sink_schedule_s or self.schedule_s
