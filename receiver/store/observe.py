"""The part of the ``Store`` contract that makes the relay observable: delivery
attempts, shared sink health, the stream's feed, per-sink statistics and retention.

Writes happen inside the operations that commit what they describe (``ingest`` appends
the event's feed entry; recording a delivery outcome adds its attempt, its feed entry
and its sink-health change), so what is watched is exactly what was committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from receiver.attempts import Attempt
from receiver.events import DueDelivery
from receiver.feed import FeedFilter, FeedItem
from receiver.sink_health import SinkHealth


@dataclass(frozen=True, slots=True)
class SinkStats:
    """Per sink: pending and dead deliveries, and when the oldest pending one was made."""

    pending: int = 0
    dead: int = 0
    oldest_pending_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many rows one retention pass removed."""

    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    feed: int = 0

    @property
    def total(self) -> int:
        return self.events + self.deliveries + self.attempts + self.feed


class ObservableStore(Protocol):
    """Attempts
        ``list_attempts(delivery_id)``: every attempt of a delivery, oldest first.
    Sink health
        ``sink_health()``: the shared circuit rows (a sink without a row is ok).
        ``claim_probe`` leases one due delivery of a paused (or abandoned probing)
        sink whose probe interval has passed and marks the circuit probing under the
        same lease; None when another worker won, or nothing is due.
    Feed
        ``read_feed(after, where, limit)``: entries after the cursor ``after`` (None:
        from the oldest kept), in commit order; ``feed_head()``: the cursor after which
        only new entries come; ``wait_for_feed(timeout_s)`` returns when entries may
        have been appended (by any process where the backend can tell), or after the
        timeout. A malformed cursor raises ``BadRequest``.
    Statistics and retention
        ``delivery_stats()``: pending/dead counts and oldest pending per sink;
        ``prune(before, limit)`` removes up to ``limit`` of each kind of row older
        than ``before`` (events only once none of their deliveries is pending).
    """

    async def list_attempts(self, delivery_id: str) -> list[Attempt]: ...

    async def sink_health(self) -> dict[str, SinkHealth]: ...

    async def claim_probe(
        self,
        sink: str,
        now: datetime,
        *,
        owner: str,
        lease_s: float,
        probe_interval_s: float,
    ) -> DueDelivery | None: ...

    async def read_feed(
        self, after: str | None, where: FeedFilter, *, limit: int = 200
    ) -> list[FeedItem]: ...

    async def feed_head(self) -> str: ...

    async def wait_for_feed(self, timeout_s: float) -> None: ...

    async def delivery_stats(self) -> dict[str, SinkStats]: ...

    async def prune(self, before: datetime, *, limit: int = 1000) -> Pruned: ...
