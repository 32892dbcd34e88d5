"""Per-destination send pacing: a token bucket shared inside the process.

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


class TokenBucket:
    """``rate_per_s`` sends per second after an initial ``burst`` (the GCRA form of a
    token bucket: ``_tat`` is when the bucket would be full again)."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = 1.0 / rate_per_s
        self.tolerance_s = (max(1, burst) - 1) * self.interval_s
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
        """The destination asked for a pause: no send before ``seconds`` from now, and
        no burst right after it either (resume at the steady rate)."""
        with self._lock:
            self._tat = max(self._tat, self._clock() + seconds + self.tolerance_s)


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
