"""Retention: delivery attempts, feed entries and finished events (with their
deliveries) older than ``[relay] retention_days`` are pruned by the worker.

Every process that runs a worker (in-process, ``relay worker``, ``worker --once``)
runs a pass on start and then every ``EVERY_S``; passes are small (``BATCH`` rows of
each kind per transaction) so the store is never locked for long, and several workers
pruning at once only share the work. ``retention_days = 0`` keeps everything.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from receiver.events import utcnow
from receiver.store import Store
from receiver.store.observe import Pruned

log = structlog.get_logger("relay.retention")

EVERY_S = 3600.0
BATCH = 1000
MAX_PASSES = 200  # one run removes at most this many batches; the next run goes on


async def prune_once(store: Store, retention_days: float, *, batch: int = BATCH) -> Pruned:
    """Prune everything older than ``retention_days`` (in batches); the totals."""
    if retention_days <= 0:
        return Pruned()
    before = utcnow() - timedelta(days=retention_days)
    total = Pruned()
    for _ in range(MAX_PASSES):
        removed = await store.prune(before, limit=batch)
        total = Pruned(
            total.events + removed.events,
            total.deliveries + removed.deliveries,
            total.attempts + removed.attempts,
            total.feed + removed.feed,
        )
        if max(removed.events, removed.attempts, removed.feed) < batch:
            break
        await asyncio.sleep(0)  # let deliveries in between
    if total.total:
        log.info(
            "retention.pruned",
            retention_days=retention_days,
            events=total.events,
            deliveries=total.deliveries,
            attempts=total.attempts,
            feed=total.feed,
        )
    return total


async def run_retention(store: Store, retention_days: float, *, every_s: float = EVERY_S) -> None:
    """Prune now and then every ``every_s``, forever (a failing pass is logged)."""
    if retention_days <= 0:
        return
    while True:
        try:
            await prune_once(store, retention_days)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention.failed")
        await asyncio.sleep(every_s)
