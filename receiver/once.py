"""``work_once``: one pass of background work, for ``relay worker --once`` and the
scheduled serverless function."""

from __future__ import annotations

from receiver.retention import prune_once
from receiver.runtime import Runtime
from receiver.settings import Settings


async def work_once(settings: Settings, budget_s: float) -> int:
    """Submit queued jobs, poll due ones, deliver what is due within ``budget_s``, then
    prune what is past ``retention_days``. Returns the number of deliveries attempted."""
    async with Runtime.open(settings) as runtime:
        await runtime.submitter.dispatch_queued()
        await runtime.poller.poll_due()
        attempted = await runtime.worker().drain(budget_s)
        await prune_once(runtime.store, settings.retention_days)
        return attempted
