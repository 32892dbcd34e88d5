"""Exactly one event per provider message, and no event lost to a sink outage, both
against a real ``relay serve``."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import httpx

from tests.helpers.processes import relay_process
from tests.helpers.recorder import Recorder
from tests.reliability.harness import WEBHOOK_PROVIDERS, Harness, Job, harness, wait_until

COPIES = 5


async def _submit_all(h: Harness, client: httpx.AsyncClient, per_provider: int) -> None:
    for provider in WEBHOOK_PROVIDERS:
        for index in range(per_provider):
            await h.submit(client, provider, f"grid{index}_nocallback")


def _webhook_ids(recorder: Recorder) -> list[str]:
    return [r.headers["webhook-id"] for r in recorder.received]


async def test_every_callback_five_times_at_once_is_one_event(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        async with (
            relay_process(h.env, h.port, log_path=h.log_path),
            httpx.AsyncClient(timeout=30) as client,
        ):
            await _submit_all(h, client, per_provider=10)
            # fresh connections for the burst, one per post (a pooled keep-alive connection
            # the server is just closing would fail a post for reasons of its own)
            limits = httpx.Limits(max_connections=len(h.jobs) * COPIES)
            async with httpx.AsyncClient(timeout=30, limits=limits) as burst:

                async def post(job: Job) -> httpx.Response:
                    for _ in range(3):  # as a provider does: a post that got no answer again
                        try:
                            return await burst.post(
                                job.callback_url,
                                json=job.completed_body(),
                                headers=job.auth_headers(),
                            )
                        except httpx.TransportError:
                            await asyncio.sleep(0.1)
                    raise AssertionError(f"no answer to {job.provider}'s callback")

                started = time.perf_counter()
                answers = await asyncio.gather(
                    *(post(job) for job in h.jobs for _ in range(COPIES))
                )
                elapsed = time.perf_counter() - started
            await wait_until(lambda: len(h.recorder.received) >= len(h.jobs), timeout=20)
            await asyncio.sleep(0.5)  # a second delivery of anything would show by now
        counts = h.counts()

    assert all(a.status_code == 200 for a in answers), [a.text for a in answers][:3]
    per_job: dict[str, list[dict[str, object]]] = collections.defaultdict(list)
    for index, answer in enumerate(answers):
        per_job[h.jobs[index // COPIES].job_id].append(answer.json())
    for bodies in per_job.values():
        assert len({b["event_id"] for b in bodies}) == 1
        # one answer made the event (at most: a post retried after a lost answer is a
        # duplicate of one whose answer never arrived)
        assert sum(1 for b in bodies if not b["duplicate"]) <= 1
    ids = _webhook_ids(h.recorder)
    print(
        f"\n{COPIES}x concurrent callbacks: {len(answers)} posts for {len(h.jobs)} jobs in"
        f" {elapsed:.2f} s -> {counts['events']} events, {len(ids)} deliveries"
        f" ({len(set(ids))} distinct webhook-ids)"
    )
    assert counts["events"] == len(h.jobs)
    # at least once: what arrived is exactly the events the answers named
    assert set(ids) == {b[0]["event_id"] for b in per_job.values()}


async def test_sink_down_then_up_delivers_everything_with_its_webhook_id(
    tmp_path: Path,
) -> None:
    """The sink answers 503 to everything for a while (the circuit opens, nothing is
    dead-lettered); once it is back every event arrives, each under the ``webhook-id``
    that the callback's answer named."""
    recorder = Recorder(default=503)
    sink_options = (
        "retry_schedule_s = [0, 0.2, 0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        "circuit_failure_threshold = 5\ncircuit_probe_interval_s = 0.5\n"
    )
    async with (
        harness(tmp_path, recorder=recorder, http_sink_options=sink_options) as h,
        relay_process(h.env, h.port, log_path=h.log_path),
        httpx.AsyncClient(timeout=30) as client,
    ):
        await _submit_all(h, client, per_provider=5)
        acked: dict[str, str] = {}
        for job in h.jobs:
            answer = await client.post(
                job.callback_url, json=job.completed_body(), headers=job.auth_headers()
            )
            assert answer.status_code == 200, answer.text
            acked[job.job_id] = answer.json()["event_id"]
        down_started = time.perf_counter()
        # the circuit opens after 5 refusals; it keeps probing every 0.5 s
        await wait_until(lambda: recorder.attempts >= 8, timeout=20)
        await asyncio.sleep(1.0)
        refused = recorder.attempts
        down_s = time.perf_counter() - down_started
        recorder.default = 200
        up_started = time.perf_counter()
        await wait_until(lambda: len(recorder.received) >= len(acked), timeout=30)
        drained_s = time.perf_counter() - up_started
        states: collections.Counter[str] = collections.Counter()
        async with asyncio.timeout(10):  # the last outcomes are recorded just after
            while states != {"delivered": len(acked)}:
                listed = await client.get(h.base_url + "/v1/deliveries", headers=h.api_headers)
                states = collections.Counter(d["state"] for d in listed.json()["deliveries"])
                await asyncio.sleep(0.05)

    ids = _webhook_ids(recorder)
    print(
        f"\nsink down {down_s:.1f} s ({refused} attempts refused with 503), up:"
        f" {len(set(ids))}/{len(acked)} events delivered in {drained_s:.1f} s;"
        f" delivery states {dict(states)}"
    )
    assert sorted(set(ids)) == sorted(acked.values())
    by_id = {r.headers["webhook-id"]: r.json for r in recorder.received}
    for job_id, event_id in acked.items():
        assert by_id[event_id]["id"] == event_id
        assert by_id[event_id]["data"]["job_id"] == job_id
    assert states == {"delivered": len(acked)}
