"""The delivery worker keeps going through store errors and sink crashes (built on its
own: a store, a sink, a retry policy; no settings, no runtime)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from handlers.sinks.base import SinkConfig
from handlers.sinks.file import FileSink
from receiver.decision import RetryPolicy
from receiver.events import (
    CallbackMode,
    DueDelivery,
    Job,
    JobStatus,
    ProviderUpdate,
    UpdateState,
    build_event,
    utcnow,
)
from receiver.metrics import Metrics
from receiver.store import Ingest
from receiver.store.sqlite import SqliteStore
from receiver.worker import DeliveryWorker


class FlakyStore(SqliteStore):
    """A real SQLite store whose first two claims fail like a locked database."""

    failures = 2

    async def claim_due(self, now: datetime, **kwargs: Any) -> list[DueDelivery]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        return await super().claim_due(now, **kwargs)


async def test_worker_survives_store_errors_and_delivers(tmp_path: Path) -> None:
    """Two failing claims are logged and retried; the event is then delivered."""
    events_path = tmp_path / "events.jsonl"
    store = FlakyStore.from_url(f"sqlite:///{tmp_path / 'relay.db'}")
    await store.migrate()
    async with httpx.AsyncClient() as client:
        sink = FileSink(SinkConfig("file", "file", {"path": str(events_path)}), client)
        try:
            job = Job(
                id="job_1",
                provider="apiframe",
                parent_id="p",
                action="U1",
                ref=None,
                status=JobStatus.SUBMITTED,
                callback_mode=CallbackMode.WEBHOOK,
                created_at=utcnow(),
            )
            await store.create_job(job)
            event = build_event(
                "apiframe", ProviderUpdate("t", UpdateState.COMPLETED, image_url="https://i"), job
            )
            await store.ingest(Ingest(event, job.id, JobStatus.COMPLETED, ["file"], utcnow()))
            worker = DeliveryWorker(store, {"file": sink}, RetryPolicy((0.0, 1.0)), Metrics())
            running = asyncio.create_task(worker.run())
            try:
                async with asyncio.timeout(30):
                    while not events_path.exists():
                        await asyncio.sleep(0.05)
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
        finally:
            await store.close()
    assert store.failures == 0
    assert json.loads(events_path.read_text())["id"] == event.id
