"""Kie and APIMart through the whole relay on real sockets: Kie's signed callback is
confirmed by record-info before an event is emitted, and APIMart is polled to the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.stack import Stack, running_stack

ROUTE_TERMINAL = '[[routes]]\nsinks = ["http"]\nevents = ["upscale.completed", "upscale.failed"]\n'
HMAC_KEY = "e2e-kie-hmac"
PROVIDER_EXTRA = {
    "kie": f'webhook_hmac_key = "{HMAC_KEY}"\npoll_interval_s = 0.05\n',
    "apimart": "poll_interval_s = 0.05\n",
}


async def _terminal_event(stack: Stack) -> Any:
    [received] = await stack.recorder.wait_for(1)
    return received.json


async def test_kie_callback_is_confirmed_by_record_info(tmp_path: Path) -> None:
    """A validly signed Kie callback whose resultUrls were tampered with is accepted (200),
    but the emitted event carries record-info's image, not the callback's."""
    async with running_stack(
        tmp_path, extra_config=ROUTE_TERMINAL, provider_options=PROVIDER_EXTRA
    ) as stack:
        stack.sim("kie").state.hmac_key = HMAC_KEY
        job = await stack.submit(provider="kie", parent_id="grid-tamper", action="U3")
        assert job["callback"] == "webhook"
        event = await _terminal_event(stack)
        task_id = job["provider_task_id"]
        assert event["type"] == "upscale.completed"
        assert event["data"]["action"] == "U3"
        assert event["data"]["image_url"] == f"{stack.sim_url}/kie/images/{task_id}.png"
        await stack.wait_job(job["job_id"], "completed")
        sender = stack.sim("kie").state.sender
        await sender.drain()
        assert (task_id, 200) in sender.sent
        submitted = stack.sim("kie").state.book.submissions[-1]
        assert submitted["imageIndex"] == 2
        assert submitted["callBackUrl"].startswith(f"{stack.base_url}/callbacks/kie/")


async def test_kie_badly_signed_callback_is_refused_and_moderation_is_reported(
    tmp_path: Path,
) -> None:
    """A callback signed with the wrong key gets 401; a moderated task ends as a failed
    event with error code ``moderated`` (confirmed by record-info)."""
    async with running_stack(
        tmp_path, extra_config=ROUTE_TERMINAL, provider_options=PROVIDER_EXTRA
    ) as stack:
        stack.sim("kie").state.hmac_key = HMAC_KEY
        bad = await stack.submit(provider="kie", parent_id="grid-badsig", action="U1")
        moderated = await stack.submit(provider="kie", parent_id="grid-moderate", action="U2")
        event = await _terminal_event(stack)
        assert event["type"] == "upscale.failed"
        assert event["data"]["job_id"] == moderated["job_id"]
        assert event["data"]["error"]["code"] == "moderated"
        sender = stack.sim("kie").state.sender
        await sender.drain()
        assert (bad["provider_task_id"], 401) in sender.sent
        assert (await stack.job(bad["job_id"]))["status"] == "submitted"
        unsupported = await stack.submit(
            expect=422, provider="kie", parent_id="grid", action="Upscale (2x)"
        )
        assert unsupported["error"] == "unsupported_action"
        assert unsupported["supported"] == ["U1", "U2", "U3", "U4"]


async def test_apimart_hd_upscale_is_polled_to_completion(tmp_path: Path) -> None:
    """An APIMart HD upscale goes out with the parent's customId and, with no callback,
    is polled until the completed event."""
    async with running_stack(
        tmp_path, extra_config=ROUTE_TERMINAL, provider_options=PROVIDER_EXTRA
    ) as stack:
        job = await stack.submit(provider="apimart", parent_id="grid-1", action="upscale_creative")
        assert job["callback"] == "poll"
        event = await _terminal_event(stack)
        task_id = job["provider_task_id"]
        assert event["type"] == "upscale.completed"
        assert event["data"]["action"] == "upscale_creative"
        assert event["data"]["image_url"] == f"{stack.sim_url}/apimart/images/{task_id}.png"
        assert "Redo Upscale (Creative)" in event["data"]["buttons"]
        submitted = stack.sim("apimart").state.book.submissions[-1]
        assert "::upsample_v7_2x_creative::" in submitted["custom_id"]


async def test_apimart_refusals_reach_the_client(tmp_path: Path) -> None:
    """A parent without the HD button is 422 provider_rejected naming the offered
    labels; a parent that is not SUCCESS is 422 too."""
    async with running_stack(tmp_path, provider_options=PROVIDER_EXTRA) as stack:
        missing = await stack.submit(
            expect=422, provider="apimart", parent_id="grid-nohd", action="Upscale (4x)"
        )
        assert missing["error"] == "provider_rejected"
        assert "U1" in missing["offered"]
        assert "Upscale (4x)" not in missing["offered"]
        not_ready = await stack.submit(
            expect=422, provider="apimart", parent_id="grid-notready", action="U1"
        )
        assert "task is not in SUCCESS state" in not_ready["message"]
