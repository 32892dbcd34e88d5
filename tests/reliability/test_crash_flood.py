"""Durability under SIGKILL: ``relay serve`` is killed three times while providers flood
it with callbacks (each retried until answered, as providers do); after the last
restart every acknowledged event is delivered, matched by ``webhook-id``."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import httpx

from tests.helpers.processes import relay_process
from tests.reliability.harness import WEBHOOK_PROVIDERS, Job, harness, wait_until

JOBS_PER_PROVIDER = 15  # useapi runs at most 15 jobs at once
KILLS = 3


async def _callback_until_answered(
    client: httpx.AsyncClient, job: Job, acked: dict[str, str], tries: collections.Counter[str]
) -> None:
    """Post the job's completed callback until the relay answers 200 (a kill in between
    is a refused connection or a dropped request: the provider tries again)."""
    while True:
        tries["sent"] += 1
        try:
            answer = await client.post(
                job.callback_url, json=job.completed_body(), headers=job.auth_headers()
            )
        except httpx.HTTPError:
            tries["transport_errors"] += 1
            await asyncio.sleep(0.05)
            continue
        if answer.status_code == 200:
            acked[job.job_id] = answer.json()["event_id"]
            return
        assert answer.status_code >= 500 or answer.status_code == 503, answer.text
        await asyncio.sleep(0.05)


async def test_sigkill_during_a_flood_loses_no_acknowledged_event(tmp_path: Path) -> None:
    # a SIGKILLed worker's leases run out in 2 s, not the default minute
    async with harness(tmp_path, lease_s=2) as h:
        acked: dict[str, str] = {}
        tries: collections.Counter[str] = collections.Counter()
        async with httpx.AsyncClient(timeout=10) as client:
            async with relay_process(h.env, h.port, log_path=tmp_path / "submit.log"):
                for provider in WEBHOOK_PROVIDERS:
                    for index in range(JOBS_PER_PROVIDER):
                        await h.submit(client, provider, f"grid{index}_nocallback")
            started = time.perf_counter()
            semaphore = asyncio.Semaphore(6)

            async def one(job: Job) -> None:
                async with semaphore:
                    await _callback_until_answered(client, job, acked, tries)
                    await asyncio.sleep(0.01)

            flood = asyncio.gather(*(one(job) for job in h.jobs))
            total = len(h.jobs)
            kills = 0
            for run in range(KILLS + 1):
                log_path = tmp_path / f"serve-{run}.log"
                async with relay_process(h.env, h.port, log_path=log_path) as process:
                    if run < KILLS:
                        threshold = (run + 1) * total // (KILLS + 1)
                        await wait_until(lambda t=threshold: len(acked) >= t, timeout=30)
                        process.send_signal(signal.SIGKILL)
                        await asyncio.to_thread(process.wait, 10)
                        kills += 1
                        continue
                    await asyncio.wait_for(flood, timeout=30)
                    wanted = set(acked.values())

                    def delivered() -> set[str]:
                        return {r.headers["webhook-id"] for r in h.recorder.received}

                    await wait_until(lambda w=wanted: w <= delivered(), timeout=30)
            elapsed = time.perf_counter() - started
        logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))

    ids = [r.headers["webhook-id"] for r in h.recorder.received]
    per_job = collections.Counter(r.json["data"]["job_id"] for r in h.recorder.received)
    missing = set(acked.values()) - set(ids)
    print(
        f"\nSIGKILL flood: {total} jobs, {tries['sent']} callback posts"
        f" ({tries['transport_errors']} hit a dead server), {kills} SIGKILLs,"
        f" {len(acked)} acknowledged, {len(set(ids))} delivered"
        f" ({len(ids) - len(set(ids))} redeliveries), missing {len(missing)}, {elapsed:.1f} s"
    )
    assert kills == KILLS
    assert len(acked) == total
    assert missing == set()
    # one event per job: a callback retried across a kill is a duplicate, not a new event
    assert set(per_job) == {job.job_id for job in h.jobs}
    assert len(set(ids)) == total
    leaked = [secret for secret in h.secrets() if secret in logs]
    assert leaked == []
