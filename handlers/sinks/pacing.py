"""Per-destination send pacing shared inside the process: a token bucket, and the
destination's own rate-limit window as its headers report it (``RateWindow``).

Slack allows about one message per second per incoming webhook, so every sink that
posts to the same webhook draws from one bucket. ``reserve`` claims a send slot
synchronously (no ``await`` between reading and writing the state, and a thread lock
for callers on other event loops) and returns how long to wait for it, so concurrent
deliveries queue up in order instead of racing.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

#: each rate-limit answer widens the send interval by this much (up to ``MAX_SLOWDOWN``):
#: a sender pacing at exactly the destination's limit keeps meeting its refill edge
SLOWDOWN = 1.05
MAX_SLOWDOWN = 1.25


class TokenBucket:
    """``rate_per_s`` sends per second after an initial ``burst`` (the GCRA form of a
    token bucket: ``_tat`` is when the bucket would be full again).

    A destination that answers "rate limited" ``pause``s the bucket: the schedule
    restarts after the pause (``generation`` changes, so a sender that reserved a slot
    before it reserves again), with no burst from then on and a slightly longer
    interval: the bucket learns the destination's real limit."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = self._base_interval_s = 1.0 / rate_per_s
        self.tolerance_s = (max(1, burst) - 1) * self.interval_s
        self.generation = 0
        self._pause_end = 0.0
        self._clock = clock
        self._tat = clock()
        self._lock = threading.Lock()

    def reserve(self, max_wait_s: float) -> float | None:
        """Claim the next send slot and return the seconds to wait for it; claim nothing
        and return None when that wait would exceed ``max_wait_s``."""
        with self._lock:
            now = self._clock()
            start = max(now, self._tat - self.tolerance_s)
            wait_s = start - now
            if wait_s > max_wait_s:
                return None
            self._tat = max(self._tat, start) + self.interval_s
            return wait_s

    def next_slot_s(self) -> float:
        """Seconds until a slot is free (for a retry hint)."""
        with self._lock:
            return max(0.0, self._tat - self.tolerance_s - self._clock())

    def pause(self, seconds: float) -> None:
        """The destination asked for a pause: no send before ``seconds`` from now, then
        the steady rate (no burst), a little slower than before. Slots reserved before
        the pause are void (see ``generation``)."""
        with self._lock:
            self.generation += 1
            self.tolerance_s = 0.0
            self.interval_s = min(self.interval_s * SLOWDOWN, self._base_interval_s * MAX_SLOWDOWN)
            # a shorter pause asked later never ends a longer one early
            self._pause_end = self._tat = max(self._clock() + seconds, self._pause_end)


_BUCKETS: dict[str, TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def shared_bucket(destination: str, rate_per_s: float, burst: int) -> TokenBucket:
    """The process-wide bucket for ``destination`` (created by its first user, whose
    rate and burst it keeps). Keyed by a hash: the destination may carry a secret."""
    key = hashlib.sha256(destination.encode()).hexdigest()
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get(key)
        if bucket is None:
            bucket = _BUCKETS[key] = TokenBucket(rate_per_s, burst)
        return bucket


class RateWindow:
    """A destination's own rate-limit window, as its ``X-RateLimit-Remaining`` and
    ``X-RateLimit-Reset-After`` headers describe it (Discord's style).

    ``claim`` takes one of the remaining sends of the current window (0.0) or says how
    long until it resets; ``release`` gives the answer's headers back. Sends still in
    flight count against ``remaining``, so concurrent senders never overrun a window
    they have already seen. Before any answer, or once a window is over, the window is
    unknown: ``claim`` lets sends go while fewer than the last ``X-RateLimit-Limit``
    (at first ``default_limit``) are in flight.
    """

    POLL_S = 0.05  # how often a send waiting on unknown room looks again

    def __init__(self, default_limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._limit = max(1, default_limit)
        self._remaining: int | None = None
        self._reset_at = 0.0
        self._in_flight = 0
        self._lock = threading.Lock()

    def claim(self) -> float:
        """0.0: a send may go now (and is counted in flight); else seconds to wait."""
        with self._lock:
            now = self._clock()
            if self._remaining is not None and now >= self._reset_at:
                self._remaining = None
            if self._remaining is None:
                if self._in_flight >= self._limit:
                    return self.POLL_S
            elif self._remaining <= 0:
                return max(0.001, self._reset_at - now)
            else:
                self._remaining -= 1
            self._in_flight += 1
            return 0.0

    def release(
        self, remaining: int | None, reset_after_s: float | None, limit: int | None = None
    ) -> None:
        """A claimed send was answered (its headers; None where there were none)."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if limit is not None and limit > 0:
                self._limit = limit
            if remaining is not None and reset_after_s is not None:
                self._remaining = max(0, remaining - self._in_flight)
                self._reset_at = self._clock() + reset_after_s

    def exhaust(self, seconds: float) -> None:
        """The destination said 429: nothing more before ``seconds`` from now."""
        with self._lock:
            self._remaining = 0
            self._reset_at = max(self._reset_at, self._clock() + seconds)


_WINDOWS: dict[str, RateWindow] = {}


def shared_window(destination: str, default_limit: int) -> RateWindow:
    """The process-wide rate window of ``destination`` (keyed by a hash, as buckets)."""
    key = hashlib.sha256(destination.encode()).hexdigest()
    with _BUCKETS_LOCK:
        window = _WINDOWS.get(key)
        if window is None:
            window = _WINDOWS[key] = RateWindow(default_limit)
        return window
