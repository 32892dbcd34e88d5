"""The useapi adapter against the useapi simulator, over real loopback sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from handlers.providers.actions import ALL_ACTIONS, LABELS
from handlers.providers.base import ProviderConfig
from handlers.providers.useapi import UseapiProvider
from receiver.errors import (
    ProviderAuthFailed,
    ProviderInsufficientCredits,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from receiver.events import ErrorCode, UpdateState
from simulators.clock import ManualClock
from simulators.useapi import DEFAULT_KEY
from tests.helpers.provider_sim import SimEnv, provider_against_simulator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAX_JOBS = "maxJobs must be an integer between 1 and 15"


async def test_every_action_calls_back_progress_then_completed() -> None:
    """All twelve actions are accepted (maxJobs 15); the simulator posts the job record
    with status progress, then completed, echoing our job id as replyRef, and the adapter
    parses them into a progress update (percentage from content) and a completed update
    whose attachment is a real PNG under /useapi."""
    clock = ManualClock()  # all twelve run at once: none may finish before the last starts
    async with provider_against_simulator("useapi", max_jobs=15, clock=clock) as env:
        specs = [env.spec(action, f"grid-{action}") for action in ALL_ACTIONS]
        results = await asyncio.gather(*(env.provider.submit(spec) for spec in specs))
        clock.advance(1.0)
        for spec, result in zip(specs, results, strict=True):
            assert not result.existing
            bodies = await env.callbacks(spec.job_id, 2)
            assert [body["status"] for body in bodies] == ["progress", "completed"]
            progress, final = (env.provider.parse_callback(body) for body in bodies)
            assert progress.state is UpdateState.PROGRESS
            assert progress.progress is not None
            assert final.state is UpdateState.COMPLETED
            for update in (progress, final):
                assert update.provider_task_id == result.provider_task_id
                assert update.correlation_id == spec.job_id
                assert update.parent_id == spec.parent_id
            assert final.image_url == f"{env.sim_url}/useapi/images/{result.provider_task_id}.png"
            image = await env.client.get(final.image_url)
            assert image.content.startswith(PNG_MAGIC)
        submitted = env.sim.state.book.submissions
        assert sorted(body["button"] for body in submitted) == sorted(LABELS.values())
        assert {body["maxJobs"] for body in submitted} == {15}
        assert env.sim.state.book.peak_running == len(ALL_ACTIONS)


async def test_poll_until_done_without_callbacks() -> None:
    """With no replyUrl, polling /v2/jobs/?jobid= goes from running to completed."""
    clock = ManualClock()
    async with provider_against_simulator("useapi", clock=clock) as env:
        spec = env.spec("upscale_creative", "grid-delay20", callback=False)
        result = await env.provider.submit(spec)
        first = await env.provider.poll(result.provider_task_id)
        assert first.state is UpdateState.PROGRESS
        clock.advance(1.0)  # past the 20 ms delay and the 60 ms task
        seen = await env.poll_until_done(result.provider_task_id)
        assert seen[-1].state is UpdateState.COMPLETED
        assert seen[-1].correlation_id == spec.job_id
        assert env.sim.state.book.submissions[0].get("replyUrl") is None


@pytest.mark.parametrize(
    ("parent", "code", "text"),
    [
        ("grid-fail", ErrorCode.FAILED, "Job timed out"),
        ("grid-moderate", ErrorCode.MODERATED, "community standards"),
        ("grid-cancel", ErrorCode.CANCELLED, "cancelled"),
    ],
)
async def test_failure_knobs_end_failed(parent: str, code: ErrorCode, text: str) -> None:
    """The fail, moderate and cancel knobs end the job failed/moderated/cancelled; both
    the callback and the poll parse to a failed update with that code."""
    async with provider_against_simulator("useapi") as env:
        spec = env.spec("U2", parent)
        result = await env.provider.submit(spec)
        bodies = await env.callbacks(spec.job_id, 2)
        final = env.provider.parse_callback(bodies[-1])
        assert final.state is UpdateState.FAILED
        assert final.error_code is code
        assert text in (final.error_message or "")
        assert final.correlation_id == spec.job_id
        polled = await env.provider.poll(result.provider_task_id)
        assert polled.error_code is code


async def test_repeated_u_button_returns_the_existing_job() -> None:
    """Pressing U1 twice on one parent gets useapi's 409, which the adapter turns into
    the first job (existing=True); a different U-button on that parent is a new job."""
    async with provider_against_simulator("useapi") as env:
        first = await env.provider.submit(env.spec("U1", "grid-1"))
        again = await env.provider.submit(env.spec("U1", "grid-1"))
        assert again.existing
        assert again.provider_task_id == first.provider_task_id
        other = await env.provider.submit(env.spec("U2", "grid-1"))
        assert not other.existing
        assert other.provider_task_id != first.provider_task_id
        raw = await _post(env, {"jobid": "grid-1", "button": "U1"})
        assert raw.status_code == 409
        assert raw.json() == {
            "error": f"Button U1 already executed by job {first.provider_task_id}",
            "button": "U1",
            "jobid": first.provider_task_id,
            "code": 409,
        }


async def test_max_jobs_three_refuses_the_fourth_concurrent_job() -> None:
    """With maxJobs 3 and three jobs running, the fourth submit gets the documented 429
    ("Maximum of 3 jobs executing in parallel supported"), which the adapter raises as
    ProviderRateLimited asking for 10..30 s; the simulator never ran more than 3."""
    async with provider_against_simulator("useapi") as env:
        running = [await env.provider.submit(env.spec("U1", f"stuck-{i}")) for i in range(3)]
        with pytest.raises(ProviderRateLimited) as caught:
            await env.provider.submit(env.spec("U1", "stuck-4"))
        assert 10 <= caught.value.retry_after_s <= 30
        assert "Maximum of 3 jobs executing in parallel supported" in caught.value.message
        raw = await _post(env, {"jobid": "grid-5", "button": "U1", "maxJobs": 3})
        assert raw.status_code == 429
        assert raw.json()["executingJobs"] == [job.provider_task_id for job in running]
        assert env.sim.state.book.peak_running == 3
        assert env.sim.state.book.refused == 2
        assert [body["maxJobs"] for body in env.sim.state.book.submissions] == [3, 3, 3]


async def test_finished_jobs_free_their_slot() -> None:
    """Once a job finishes, a new one fits under maxJobs again. The simulator's clock
    stands still until the test moves it, so the short job cannot finish early."""
    clock = ManualClock()
    async with provider_against_simulator("useapi", clock=clock) as env:
        for i in range(2):
            await env.provider.submit(env.spec("U1", f"stuck-{i}"))
        short = await env.provider.submit(env.spec("U1", "grid-slow10"))
        with pytest.raises(ProviderRateLimited):
            await env.provider.submit(env.spec("U1", "grid-next"))
        clock.advance(0.035)  # the default 30 ms delay has passed, the 10 ms job has not
        assert (await env.provider.poll(short.provider_task_id)).state is UpdateState.PROGRESS
        with pytest.raises(ProviderRateLimited):
            await env.provider.submit(env.spec("U1", "grid-next"))
        clock.advance(0.01)
        assert (await env.provider.poll(short.provider_task_id)).state is UpdateState.COMPLETED
        await env.provider.submit(env.spec("U1", "grid-next"))
        assert env.sim.state.book.peak_running == 3
        assert env.sim.state.book.refused == 2
        clock.advance(1.0)  # let the last job's callbacks go out before the drain


async def test_documented_errors_map_through_the_adapter() -> None:
    """The simulator's documented answers reach the adapter as our error codes: nosub
    402, notfound 404, blocked 422, queued 504, Discord's 429 (10 s), a wrong key 401."""
    async with provider_against_simulator("useapi") as env:
        with pytest.raises(ProviderInsufficientCredits):
            await env.provider.submit(env.spec("U1", "grid-nosub"))
        with pytest.raises(ProviderRejected, match="Unable to locate job grid-notfound"):
            await env.provider.submit(env.spec("U1", "grid-notfound"))
        with pytest.raises(ProviderRejected, match="Our AI moderators") as moderated:
            await env.provider.submit(env.spec("U1", "grid-blocked"))
        assert moderated.value.status == 422
        with pytest.raises(ProviderUnavailable, match="Job queued"):
            await env.provider.submit(env.spec("U1", "grid-queued"))
        with pytest.raises(ProviderRateLimited, match="Discord") as limited:
            await env.provider.submit(env.spec("U1", "grid-ratelimit"))
        assert limited.value.retry_after_s == 10
        config = env.provider.config
        wrong = UseapiProvider(
            ProviderConfig(name="useapi", api_key="wrong", base_url=config.base_url), env.client
        )
        with pytest.raises(ProviderAuthFailed):
            await wrong.submit(env.spec("U1", "grid"))
        with pytest.raises(ProviderAuthFailed):
            await wrong.poll("anything")
        with pytest.raises(ProviderRejected, match="Unable to locate job"):
            await env.provider.poll("no-such-job")
        assert env.sim.state.book.submissions == []


async def _post(env: SimEnv, body: Any) -> httpx.Response:
    return await env.client.post(
        f"{env.sim_url}/useapi/v2/jobs/button",
        json=body,
        headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"button": "U1"}, "jobid is missing"),
        ({"jobid": "grid"}, "button is missing"),
        ({"jobid": "grid", "button": "upscale (2x)"}, "button upscale (2x) not supported"),
        ({"jobid": "grid", "button": "Custom Zoom"}, "prompt is missing"),
        ({"jobid": "grid", "button": "U1", "replyRef": "x" * 1025}, "replyRef is too long"),
        ({"jobid": "grid", "button": "U1", "replyUrl": "x" * 1025}, "replyUrl is too long"),
        ({"jobid": "grid", "button": "U1", "maxJobs": 0}, _MAX_JOBS),
        ({"jobid": "grid", "button": "U1", "maxJobs": "3"}, _MAX_JOBS),
        ({"jobid": "grid", "button": "U1", "replyUrl": 5}, "replyUrl must be a string"),
        ("U1", "jobid is missing"),
    ],
)
async def test_simulator_validates_bodies_like_the_docs(body: Any, error: str) -> None:
    """Missing or unknown fields are answered 400 with useapi's ``{"error", "code"}``."""
    async with provider_against_simulator("useapi") as env:
        response = await _post(env, body)
        assert response.status_code == 400
        assert response.json() == {"error": error, "code": 400}


async def test_simulator_checks_the_parents_buttons() -> None:
    """A button the finished parent does not offer is the documented 400 "button … not
    found in job … buttons …"; one it offers is accepted."""
    async with provider_against_simulator("useapi") as env:
        first = await env.provider.submit(env.spec("U1", "grid"))
        await env.poll_until_done(first.provider_task_id)
        with pytest.raises(ProviderRejected, match="button Redo Upscale \\(2x\\) not found"):
            await env.provider.submit(env.spec("redo_upscale_2x", first.provider_task_id))
        child = await env.provider.submit(env.spec("upscale_subtle", first.provider_task_id))
        done = await env.poll_until_done(child.provider_task_id)
        assert done[-1].parent_id == first.provider_task_id
        assert "Redo Upscale (Subtle)" in done[-1].buttons


async def test_simulator_answers_with_the_job_record() -> None:
    """The submit answer is the documented job record (status started, code 200) that
    echoes replyRef, replyUrl and maxJobs."""
    async with provider_against_simulator("useapi") as env:
        reply_url = f"{env.receiver_url}/callbacks/job_x"
        body = {"jobid": "grid", "button": "U3", "replyRef": "r-1", "replyUrl": reply_url}
        response = await _post(env, body)
        record = response.json()
        assert response.status_code == 200
        assert record["status"] == "started"
        assert record["verb"] == "button"
        assert record["code"] == 200
        assert record["replyRef"] == "r-1"
        assert record["replyUrl"] == reply_url
        assert record["maxJobs"] == 3
        assert record["parentJobId"] == "grid"


async def test_simulator_refuses_unfinished_parents_and_polls_without_jobid() -> None:
    """A button on a parent that is still running is a 400, non-JSON bodies are a 400,
    and a poll without ``jobid`` is useapi's 400 "jobid is missing"."""
    async with provider_against_simulator("useapi") as env:
        parent = await env.provider.submit(env.spec("U1", "grid-stuck"))
        with pytest.raises(ProviderRejected, match="is not completed"):
            await env.provider.submit(env.spec("upscale_subtle", parent.provider_task_id))
        headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
        response = await env.client.post(
            f"{env.sim_url}/useapi/v2/jobs/button", content=b"jobid=x", headers=headers
        )
        assert response.json() == {"error": "jobid is missing", "code": 400}
        response = await env.client.get(f"{env.sim_url}/useapi/v2/jobs/", headers=headers)
        assert response.status_code == 400
        assert response.json() == {"error": "jobid is missing", "code": 400}
