"""One result, one job, one event: concurrent submissions sharing an Idempotency-Key and a
poll racing a late callback never duplicate anything."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.stack import Stack, running_stack

HTTP_COMPLETED = '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed"]\n'


def _task(stack: Stack, job: dict[str, Any]) -> Any:
    return stack.sim("apiframe").state.book.get(job["provider_task_id"])


async def test_concurrent_requests_with_one_idempotency_key_submit_once(tmp_path: Path) -> None:
    """Five simultaneous submissions with one Idempotency-Key: one job, one provider call."""
    async with running_stack(tmp_path) as stack:
        headers = {"Idempotency-Key": "same"}
        body = {"provider": "apiframe", "parent_id": "p-slow500", "action": "U1"}
        answers = await asyncio.gather(*(stack.submit(headers=headers, **body) for _ in range(5)))
        assert len({a["job_id"] for a in answers}) == 1
        assert len(stack.sim("apiframe").state.book.submissions) == 1


async def test_a_poll_and_a_callback_for_one_result_make_one_event(tmp_path: Path) -> None:
    """A job completed by the poller, then the provider's (late) callback for the same
    result: the callback is a duplicate, one completed event, one delivery."""
    options = {"apiframe": "poll_after_s = 0.05\npoll_interval_s = 0.05\n"}
    async with running_stack(
        tmp_path, extra_config=HTTP_COMPLETED, provider_options=options
    ) as stack:
        job = await stack.submit(provider="apiframe", parent_id="g-nocallback", action="U1")
        await stack.wait_job(job["job_id"], "completed")  # by polling: no callback was sent
        task = _task(stack, job)
        async with httpx.AsyncClient() as client:
            late = await client.post(
                task.callback_url,
                json={"task_id": task.id, "image_url": task.image_url},
                headers={"x-webhook-secret": task.extra["webhook_secret"]},
            )
        assert late.status_code == 200
        assert late.json()["duplicate"] is True
        await stack.recorder.wait_for(1)
        # a second event would have brought its own delivery with it, at once
        await stack.wait_deliveries(1, state="delivered")
        events = (await stack.job(job["job_id"]))["events"]
        assert [e["type"] for e in events].count("upscale.completed") == 1
        assert len(await stack.deliveries()) == 1
        assert len(stack.recorder.received) == 1
