"""The ImaginePro adapter against the ImaginePro simulator, over real loopback sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from handlers.providers.imaginepro import SUPPORTED
from receiver.errors import ProviderAuthFailed, ProviderRateLimited, ProviderRejected
from receiver.events import ErrorCode, UpdateState
from simulators.clock import ManualClock
from simulators.imaginepro import DEFAULT_KEY
from tests.helpers.provider_sim import provider_against_simulator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def test_every_supported_action_calls_back_progress_then_done() -> None:
    """Each supported action is accepted; the simulator posts PROCESSING then DONE to
    webhookOverride, echoing our job id as ``ref``, and the adapter parses them into a
    progress and a completed update whose image is a real PNG under /imaginepro."""
    async with provider_against_simulator("imaginepro") as env:
        specs = [env.spec(action, f"grid-{action}") for action in SUPPORTED]
        results = await asyncio.gather(*(env.provider.submit(spec) for spec in specs))
        for spec, result in zip(specs, results, strict=True):
            assert not result.existing
            bodies = await env.callbacks(spec.job_id, 2)
            progress, final = (env.provider.parse_callback(body) for body in bodies)
            assert progress.state is UpdateState.PROGRESS
            assert final.state is UpdateState.COMPLETED
            for update in (progress, final):
                assert update.provider_task_id == result.provider_task_id
                assert update.correlation_id == spec.job_id
                assert update.parent_id == spec.parent_id
            assert final.image_url == (
                f"{env.sim_url}/imaginepro/images/{result.provider_task_id}.png"
            )
            assert final.buttons, "a finished upscale offers its next buttons"
            image = await env.client.get(final.image_url)
            assert image.status_code == 200
            assert image.headers["content-type"] == "image/png"
            assert image.content.startswith(PNG_MAGIC)
        sent = [body["button"] for body in env.sim.state.book.submissions]
        assert sorted(sent) == sorted(
            [
                *("U1", "U2", "U3", "U4", "Upscale (2x)", "Upscale (4x)", "Upscale (Subtle)"),
                *("Upscale (Creative)", "Redo Upscale (2x)", "Redo Upscale (4x)"),
            ]
        )


async def test_poll_until_done_without_callbacks() -> None:
    """With no callback, polling the fetch endpoint goes from running to DONE."""
    clock = ManualClock()
    async with provider_against_simulator("imaginepro", clock=clock) as env:
        spec = env.spec("U2", "grid-delay20", callback=False)
        result = await env.provider.submit(spec)
        first = await env.provider.poll(result.provider_task_id)
        assert first.state is UpdateState.PROGRESS
        clock.advance(1.0)  # past the 20 ms delay and the 60 ms task
        seen = await env.poll_until_done(result.provider_task_id)
        assert seen[-1].state is UpdateState.COMPLETED
        assert seen[-1].correlation_id == spec.job_id
        assert seen[-1].image_url is not None
        assert env.bodies_for(spec.job_id) == []


async def test_poll_says_queued_before_the_task_starts() -> None:
    """Before its delay has passed, a task is QUEUED (a progress update at 0)."""
    async with provider_against_simulator("imaginepro") as env:
        result = await env.provider.submit(env.spec("U1", "grid-nocallback-delay5000"))
        response = await env.client.get(
            f"{env.sim_url}/imaginepro/api/v1/message/fetch/{result.provider_task_id}",
            headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
        )
        assert response.json()["status"] == "QUEUED"
        update = await env.provider.poll(result.provider_task_id)
        assert update.state is UpdateState.PROGRESS
        assert update.progress == 0


@pytest.mark.parametrize(
    ("parent", "code"), [("grid-fail", ErrorCode.FAILED), ("grid-moderate", ErrorCode.MODERATED)]
)
async def test_fail_and_moderate_knobs_end_failed(parent: str, code: ErrorCode) -> None:
    """The fail and moderate knobs end the task FAIL; callback and poll both parse to a
    failed update with the right error code."""
    async with provider_against_simulator("imaginepro") as env:
        spec = env.spec("upscale_subtle", parent)
        result = await env.provider.submit(spec)
        bodies = await env.callbacks(spec.job_id, 2)
        final = env.provider.parse_callback(bodies[-1])
        assert final.state is UpdateState.FAILED
        assert final.error_code is code
        assert final.correlation_id == spec.job_id
        polled = await env.provider.poll(result.provider_task_id)
        assert polled.state is UpdateState.FAILED
        assert polled.error_code is code


async def test_twice_and_out_of_order_knobs_bend_the_callbacks() -> None:
    """``twice`` repeats the DONE callback; ``outoforder`` sends DONE before PROCESSING."""
    async with provider_against_simulator("imaginepro") as env:
        twice = env.spec("U1", "grid-twice")
        late = env.spec("U1", "grid-outoforder")
        await env.provider.submit(twice)
        await env.provider.submit(late)
        statuses = [body["status"] for body in await env.callbacks(twice.job_id, 3)]
        assert statuses == ["PROCESSING", "DONE", "DONE"]
        statuses = [body["status"] for body in await env.callbacks(late.job_id, 2)]
        assert statuses == ["DONE", "PROCESSING"]


async def test_stuck_knob_never_finishes() -> None:
    """A stuck task calls back PROCESSING once and polls keep saying running, however
    long the (simulator's) clock runs."""
    clock = ManualClock()
    async with provider_against_simulator("imaginepro", clock=clock) as env:
        spec = env.spec("U3", "grid-stuck")
        result = await env.provider.submit(spec)
        clock.advance(3600)
        await env.callbacks(spec.job_id, 1)
        await env.sim.state.sender.drain()  # its callbacks are all sent
        assert (await env.provider.poll(result.provider_task_id)).state is UpdateState.PROGRESS
        assert len(env.bodies_for(spec.job_id)) == 1


async def test_submit_errors_map_through_the_adapter() -> None:
    """A wrong key, the ratelimit knob and an unknown parent reach the adapter as
    ProviderAuthFailed, ProviderRateLimited and ProviderRejected."""
    async with provider_against_simulator("imaginepro") as env:
        with pytest.raises(ProviderRateLimited):
            await env.provider.submit(env.spec("U1", "grid-ratelimit"))
        with pytest.raises(ProviderRejected, match="not found"):
            await env.provider.submit(env.spec("U1", "grid-notfound"))
        wrong = type(env.provider)(
            env.provider.config.__class__(
                name="imaginepro", api_key="wrong", base_url=env.provider.config.base_url
            ),
            env.client,
        )
        with pytest.raises(ProviderAuthFailed):
            await wrong.submit(env.spec("U1", "grid"))
        with pytest.raises(ProviderAuthFailed):
            await wrong.poll("anything")
        assert env.sim.state.book.submissions == []


async def _post(env: Any, body: Any) -> httpx.Response:
    return await env.client.post(
        f"{env.sim_url}/imaginepro/api/v1/nova/button",
        json=body,
        headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
    )


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"button": "U1"}, "messageId should not be empty"),
        ({"messageId": "grid"}, "button should not be empty"),
        ({"messageId": "grid", "button": "upscale (2x)"}, "button must be one of"),
        ({"messageId": "grid", "button": "Upscale (2X)"}, "button must be one of"),
        ({"messageId": "grid", "button": "Redo Upscale (Subtle)"}, "button must be one of"),
        ({"messageId": "grid", "button": "U1", "ref": 5}, "ref must be a string"),
        (["not", "an", "object"], "JSON object"),
    ],
)
async def test_simulator_validates_bodies_like_the_docs(body: Any, text: str) -> None:
    """Missing fields, labels that do not match exactly (case included) and the unlisted
    Redo Upscale (Subtle) are answered 400 in the SDK's error shape."""
    async with provider_against_simulator("imaginepro") as env:
        response = await _post(env, body)
        assert response.status_code == 400
        answer = response.json()
        assert answer["statusCode"] == 400
        assert text in str(answer["message"])


async def test_simulator_checks_the_parents_buttons() -> None:
    """Pressing a button a finished upscale does not offer is refused with the
    documented ``{"success": false, "error"}``; one it offers is accepted."""
    async with provider_against_simulator("imaginepro") as env:
        spec = env.spec("U1", "grid")
        first = await env.provider.submit(spec)
        await env.poll_until_done(first.provider_task_id)
        refused = await _post(env, {"messageId": first.provider_task_id, "button": "Upscale (2x)"})
        assert refused.status_code == 400
        assert refused.json()["success"] is False
        assert "Upscale (2x)" in refused.json()["error"]
        child = await env.provider.submit(env.spec("upscale_subtle", first.provider_task_id))
        done = await env.poll_until_done(child.provider_task_id)
        assert done[-1].parent_id == first.provider_task_id


async def test_legacy_endpoints_answer_too() -> None:
    """The legacy button and message endpoints behave like the current ones."""
    async with provider_against_simulator("imaginepro") as env:
        headers = {"Authorization": f"Bearer {DEFAULT_KEY}"}
        base = f"{env.sim_url}/imaginepro/api/v1/midjourney"
        submitted = await env.client.post(
            f"{base}/button", json={"messageId": "grid", "button": "U4"}, headers=headers
        )
        assert submitted.status_code == 200
        assert submitted.json()["success"] is True
        message_id = submitted.json()["messageId"]
        fetched = await env.client.get(f"{base}/message/{message_id}", headers=headers)
        assert fetched.json()["messageId"] == message_id
        assert fetched.json()["ref"] == ""


async def test_simulator_refuses_non_json_and_unknown_messages() -> None:
    """A body that is not JSON is a 400; fetching an unknown message is a 404, which the
    adapter raises as ProviderRejected."""
    async with provider_against_simulator("imaginepro") as env:
        response = await env.client.post(
            f"{env.sim_url}/imaginepro/api/v1/nova/button",
            content=b"messageId=grid",
            headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
        )
        assert response.status_code == 400
        assert response.json()["statusCode"] == 400
        with pytest.raises(ProviderRejected):
            await env.provider.poll("no-such-message")
