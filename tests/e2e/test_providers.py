"""Every provider end to end through its simulator and the whole relay, on real sockets:
each supported action completes at the sink; failures, moderation, polling, timeouts,
Kie's HMAC and confirmation, useapi's concurrency cap and repeated buttons."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from handlers.providers import PROVIDERS, ProviderConfig
from tests.helpers.stack import Stack, running_stack
from tests.helpers.waiting import wait_until

FAST_POLLING = "poll_after_s = 0.3\npoll_interval_s = 0.1\n"
ROUTE = '[[routes]]\nevents = ["upscale.completed", "upscale.failed"]\nsinks = ["http"]\n'
ALL_FAST = dict.fromkeys(PROVIDERS, FAST_POLLING)


async def _supported(provider: str) -> tuple[str, ...]:
    async with httpx.AsyncClient() as client:
        config = ProviderConfig(name=provider, api_key="k", base_url="http://127.0.0.1:1")
        return PROVIDERS[provider](config, client).supported_actions()


async def _events_for(stack: Stack, job_ids: set[str], timeout: float = 20.0) -> dict[str, Any]:
    """The first terminal event the sink received for each job."""
    async with asyncio.timeout(timeout):
        while True:
            found = {
                r.json["data"]["job_id"]: r.json
                for r in stack.recorder.received
                if r.json["data"]["job_id"] in job_ids
            }
            if len(found) == len(job_ids):
                return found
            await asyncio.sleep(0.02)


def _sim_task(stack: Stack, provider: str, task_id: str) -> Any:
    return stack.sim(provider).state.book.get(task_id)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_every_supported_action_completes_at_the_sink(tmp_path: Path, provider: str) -> None:
    """Each action the provider supports → upscale.completed with the simulator's image,
    the provider's task id, our normalised action and the user's ref."""
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=ALL_FAST) as stack:
        jobs = {}
        for index, action in enumerate(await _supported(provider)):
            job = await stack.submit(
                provider=provider, parent_id=f"grid{index}", action=action, ref=f"ref-{index}"
            )
            jobs[job["job_id"]] = (job, action, f"ref-{index}")
        events = await _events_for(stack, set(jobs))
        for job_id, (job, action, ref) in jobs.items():
            event = events[job_id]
            assert event["type"] == "upscale.completed", event
            data = event["data"]
            task_id = job["provider_task_id"] or (await stack.job(job_id))["provider_task_id"]
            assert data["provider_task_id"] == task_id
            assert data["action"] == action
            assert data["ref"] == ref
            assert data["provider"] == provider
            assert data["image_url"] == _sim_task(stack, provider, task_id).image_url


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize(("knob", "code"), [("fail", "failed"), ("moderate", "moderated")])
async def test_failed_and_moderated_tasks_become_failed_events(
    tmp_path: Path, provider: str, knob: str, code: str
) -> None:
    """A failing or moderated task → upscale.failed with error.code and a message."""
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=ALL_FAST) as stack:
        job = await stack.submit(provider=provider, parent_id=f"p-{knob}", action="U1", ref="r")
        event = (await _events_for(stack, {job["job_id"]}))[job["job_id"]]
        assert event["type"] == "upscale.failed"
        assert event["data"]["error"]["code"] == code
        assert event["data"]["error"]["message"]
        assert event["data"]["image_url"] is None
        assert (await stack.job(job["job_id"]))["status"] == "failed"


async def test_apimart_completes_by_polling_alone(tmp_path: Path) -> None:
    """APIMart sends no callbacks: the job says callback=poll and completes by polling."""
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=ALL_FAST) as stack:
        job = await stack.submit(provider="apimart", parent_id="g", action="U2")
        assert job["callback"] == "poll"
        await _events_for(stack, {job["job_id"]})
        assert (await stack.job(job["job_id"]))["status"] == "completed"


async def test_missing_callback_is_replaced_by_polling(tmp_path: Path) -> None:
    """A job whose callback never comes completes through the poller after poll_after_s."""
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=ALL_FAST) as stack:
        job = await stack.submit(provider="apiframe", parent_id="g-nocallback", action="U1")
        assert stack.sim("apiframe").state.sender.sent == []
        event = (await _events_for(stack, {job["job_id"]}))[job["job_id"]]
        assert event["type"] == "upscale.completed"


async def test_job_that_never_finishes_times_out(tmp_path: Path) -> None:
    """A task stuck at the provider ends as upscale.failed with error.code timeout."""
    options = {"apiframe": FAST_POLLING + "deadline_s = 0.6\n"}
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=options) as stack:
        job = await stack.submit(provider="apiframe", parent_id="g-stuck", action="U1")
        event = (await _events_for(stack, {job["job_id"]}))[job["job_id"]]
        assert event["type"] == "upscale.failed"
        assert event["data"]["error"]["code"] == "timeout"


KIE_KEY = "kie-hmac-test-key"


def _kie_headers(task_id: str, stamp: int, key: str = KIE_KEY) -> dict[str, str]:
    digest = hmac.new(key.encode(), f"{task_id}.{stamp}".encode(), hashlib.sha256).digest()
    return {
        "X-Webhook-Timestamp": str(stamp),
        "X-Webhook-Signature": base64.b64encode(digest).decode(),
    }


async def test_kie_hmac_and_confirmation_by_record_info(tmp_path: Path) -> None:
    """Kie with an HMAC key: wrong signature → 401, stale timestamp → 401; a validly signed
    callback whose URLs differ from record-info yields an event with record-info's URL."""
    options = {"kie": FAST_POLLING + f'webhook_hmac_key = "{KIE_KEY}"\n'}
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=options) as stack:
        stack.sim("kie").state.hmac_key = KIE_KEY
        job = await stack.submit(provider="kie", parent_id="g-tamper", action="U1")
        event = (await _events_for(stack, {job["job_id"]}))[job["job_id"]]
        task = _sim_task(stack, "kie", job["provider_task_id"])
        assert event["data"]["image_url"] == task.image_url
        quiet = await stack.submit(provider="kie", parent_id="q-nocallback-stuck", action="U2")
        url = _sim_task(stack, "kie", quiet["provider_task_id"]).callback_url
        body = {
            "code": 200,
            "msg": "success",
            "data": {"taskId": quiet["provider_task_id"], "resultUrls": ["https://evil/x.png"]},
        }
        now = int(time.time())
        polls = stack.sim("kie").state.book.polls
        async with httpx.AsyncClient() as client:
            for headers in (
                _kie_headers(quiet["provider_task_id"], now, key="wrong"),
                _kie_headers(quiet["provider_task_id"], now - 600),
                _kie_headers(quiet["provider_task_id"], now + 600),
                {},
            ):
                response = await client.post(url, json=body, headers=headers)
                assert response.status_code == 401, response.text
            accepted = await client.post(
                url, json=body, headers=_kie_headers(quiet["provider_task_id"], now)
            )
            assert accepted.status_code == 200
            assert accepted.json()["event_id"] is None  # held until record-info confirms
        # the confirming poll was answered and handled once the poll after it went out
        confirmed_after = polls[quiet["provider_task_id"]] + 2
        await wait_until(lambda: polls[quiet["provider_task_id"]] >= confirmed_after)
        # still running at record-info, so the unconfirmed body produced no completed event
        events = (await stack.job(quiet["job_id"]))["events"]
        assert "upscale.completed" not in [e["type"] for e in events]


async def test_useapi_never_exceeds_max_jobs_and_all_complete(tmp_path: Path) -> None:
    """Six submissions at once with max_jobs = 3: never more than 3 running at the
    simulator (it never even had to refuse one), the rest wait as queued, all complete.
    Tasks take 1.5 s, so all six are submitted before a slot frees, even on a busy box."""
    options = {"useapi": FAST_POLLING + "max_jobs = 3\n"}
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=options) as stack:
        jobs = await asyncio.gather(
            *(
                stack.submit(provider="useapi", parent_id=f"p{i}-slow1500", action="U1")
                for i in range(6)
            )
        )
        assert [j["status"] for j in jobs].count("queued") == 3
        await _events_for(stack, {j["job_id"] for j in jobs})
        book = stack.sim("useapi").state.book
        assert book.peak_running <= 3
        assert book.refused == 0


async def test_useapi_repeated_button_returns_the_existing_job(tmp_path: Path) -> None:
    """Pressing U1 twice on one parent: the second submission binds to the first
    provider job (useapi's 409) instead of failing."""
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=ALL_FAST) as stack:
        first = await stack.submit(provider="useapi", parent_id="same", action="U1")
        second = await stack.submit(provider="useapi", parent_id="same", action="U1")
        assert second["provider_task_id"] == first["provider_task_id"]
        assert second["job_id"] != first["job_id"]
        await stack.wait_job(second["job_id"], "completed")


async def test_account_level_callbacks_need_an_account_secret(tmp_path: Path) -> None:
    """Jobs started outside the relay call back to /callbacks/{provider}: Kie (HMAC) and
    Apiframe (account secret) become events with the provider's task id and no job of
    ours; without a verifiable account secret the callback is refused (401)."""
    options = {
        **ALL_FAST,
        "kie": FAST_POLLING + f'webhook_hmac_key = "{KIE_KEY}"\n',
        "apiframe": FAST_POLLING + 'account_webhook_secret = "acct-secret-0123456789"\n',
    }
    async with running_stack(tmp_path, extra_config=ROUTE, provider_options=options) as stack:
        stack.sim("kie").state.hmac_key = KIE_KEY
        async with httpx.AsyncClient() as client:
            kie = await client.post(
                f"{stack.sim_url}/kie/api/v1/mj/generateUpscale",
                json={
                    "taskId": "outside",
                    "imageIndex": 1,
                    "callBackUrl": f"{stack.base_url}/callbacks/kie",
                },
                headers={"Authorization": "Bearer sim-kie-key"},
            )
            kie_task = kie.json()["data"]["taskId"]
            apiframe = await client.post(
                f"{stack.sim_url}/apiframe/upscale-1x",
                json={
                    "parent_task_id": "outside",
                    "index": "2",
                    "webhook_url": f"{stack.base_url}/callbacks/apiframe",
                    "webhook_secret": "acct-secret-0123456789",
                },
                headers={"Authorization": "sim-apiframe-key"},
            )
            apiframe_task = apiframe.json()["task_id"]
            refused = await client.post(
                f"{stack.base_url}/callbacks/imaginepro",
                json={"messageId": "m", "status": "DONE", "uri": "https://i/x.png"},
            )
            assert refused.status_code == 401
            wrong = await client.post(
                f"{stack.base_url}/callbacks/apiframe",
                json={"task_id": apiframe_task, "image_url": "https://evil/x.png"},
                headers={"x-webhook-secret": "guess"},
            )
            assert wrong.status_code == 401
        async with asyncio.timeout(10):
            while len(stack.recorder.received) < 2:
                await asyncio.sleep(0.02)
        by_task = {r.json["data"]["provider_task_id"]: r.json for r in stack.recorder.received}
        for provider, task_id in (("kie", kie_task), ("apiframe", apiframe_task)):
            event = by_task[task_id]
            assert event["type"] == "upscale.completed"
            assert event["data"]["provider"] == provider
            assert event["data"]["job_id"] is None
            assert event["data"]["image_url"] == _sim_task(stack, provider, task_id).image_url
