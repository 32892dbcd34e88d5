"""The APIMart adapter driving the APIMart simulator over real loopback sockets: every
action (HD ones through the parent's customId), polling to the end, knobs, both poll
shapes and strict validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette

from handlers.providers.actions import ALL_ACTIONS, GRID_ACTIONS, LABELS
from handlers.providers.apimart import ApimartProvider, parse_task
from handlers.providers.base import ProviderConfig, SubmitSpec
from receiver.errors import (
    ProviderAuthFailed,
    ProviderError,
    ProviderInsufficientCredits,
    ProviderRateLimited,
    ProviderRejected,
)
from receiver.events import ErrorCode, ProviderUpdate, UpdateState
from simulators.apimart import DEFAULT_KEY, HD_COMMANDS, create_app
from simulators.clock import ManualClock
from tests.helpers.servers import serve_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
AUTH = {"Authorization": f"Bearer {DEFAULT_KEY}"}


@dataclass
class World:
    app: Starlette
    provider: ApimartProvider
    sim_url: str
    client: httpx.AsyncClient
    clock: ManualClock

    @property
    def submissions(self) -> list[Any]:
        submissions: list[Any] = self.app.state.book.submissions
        return submissions

    async def upscale(self, parent: str, action: str) -> list[ProviderUpdate]:
        """Submit, poll once, move the clock past the task's end and poll to the end;
        every update seen."""
        spec = SubmitSpec("job_1", parent, action, callback_url=None, callback_secret=None)
        result = await self.provider.submit(spec)
        seen = [await self.provider.poll(result.provider_task_id)]
        self.clock.advance(60.0)  # far past any task's delay and duration
        async with asyncio.timeout(5):
            while not seen or not seen[-1].state.terminal:
                if seen:
                    await asyncio.sleep(0.01)
                seen.append(await self.provider.poll(result.provider_task_id))
        assert {u.provider_task_id for u in seen} == {result.provider_task_id}
        return seen

    async def raw_upscale(self, body: Any) -> httpx.Response:
        return await self.client.post(
            f"{self.sim_url}/v1/midjourney/generations/upscale", json=body, headers=AUTH
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    """One simulator and client for the module; tests use their own parent ids. The
    simulator's clock moves only when a test moves it."""
    clock = ManualClock()
    app = create_app(clock=clock)
    async with serve_app(app) as sim_url, httpx.AsyncClient(timeout=5) as client:
        config = ProviderConfig(name="apimart", api_key=DEFAULT_KEY, base_url=sim_url)
        yield World(app, ApimartProvider(config, client), sim_url, client, clock)


@pytest.mark.parametrize("action", ALL_ACTIONS)
async def test_every_action_completes(world: World, action: str) -> None:
    """Each of the twelve actions is submitted (U1-U4 by index, the rest by the parent's
    customId), runs through SUBMITTED/IN_PROGRESS and ends with one fetchable PNG."""
    parent = f"task_grid_{action}"
    seen = await world.upscale(parent, action)
    assert seen[0].state is UpdateState.PROGRESS
    done = seen[-1]
    assert done.state is UpdateState.COMPLETED
    assert done.image_url == f"{world.sim_url}/images/{done.provider_task_id}.png"
    assert done.image_urls == (done.image_url,)
    submitted = world.submissions[-1]
    assert submitted["task_id"] == parent
    if action in GRID_ACTIONS:
        assert submitted == {"task_id": parent, "index": int(action[1])}
    else:
        command = HD_COMMANDS[LABELS[action]]
        assert set(submitted) == {"task_id", "custom_id"}
        assert submitted["custom_id"].startswith(f"MJ::JOB::{command}::1::")
    image = await world.client.get(done.image_url)
    assert image.status_code == 200
    assert image.content.startswith(PNG_MAGIC)


async def test_progress_is_reported_as_a_percentage_string() -> None:
    """A task past its start delay and short of its end shows IN_PROGRESS "40%", read as
    progress 40 (the simulator's clock is moved there, not waited for)."""
    clock = ManualClock()
    app = create_app(clock=clock)
    async with serve_app(app) as sim_url, httpx.AsyncClient(timeout=5) as client:
        provider = ApimartProvider(
            ProviderConfig(name="apimart", api_key=DEFAULT_KEY, base_url=sim_url), client
        )
        spec = SubmitSpec("job_1", "grid-slow400", "U1", callback_url=None, callback_secret=None)
        result = await provider.submit(spec)
        url = f"{sim_url}/v1/midjourney/{result.provider_task_id}"
        assert (await client.get(url, headers=AUTH)).json()["status"] == "SUBMITTED"
        clock.advance(0.06)  # past the 30 ms start delay, inside the 400 ms task
        raw = await client.get(url, headers=AUTH)
        assert raw.json()["status"] == "IN_PROGRESS"
        assert raw.json()["progress"] == "40%"
        update = await provider.poll(result.provider_task_id)
        assert update.state is UpdateState.PROGRESS
        assert update.progress == 40


@pytest.mark.parametrize(
    ("parent", "action", "error_code"),
    [
        ("grid-fail", "U1", ErrorCode.FAILED),
        ("grid-moderate", "U3", ErrorCode.MODERATED),
        ("grid-moderate-hd", "upscale_creative", ErrorCode.MODERATED),
    ],
)
async def test_failure_knobs_give_failed_updates(
    world: World, parent: str, action: str, error_code: ErrorCode
) -> None:
    """fail / moderate end in FAILURE with a fail_reason, normalised to failed / moderated."""
    done = (await world.upscale(parent, action))[-1]
    assert done.state is UpdateState.FAILED
    assert done.error_code is error_code
    assert done.error_message


async def test_unified_shape_agrees_and_marks_cancellation(world: World) -> None:
    """GET /v1/tasks/{id} (unified shape) parses to the same result as the MJ-style poll,
    with url as an array or (``urlstring``) a string, and shows cancellation."""
    for parent in ("grid-unified", "grid-urlstring"):
        done = (await world.upscale(parent, "U2"))[-1]
        raw = await world.client.get(
            f"{world.sim_url}/v1/tasks/{done.provider_task_id}", headers=AUTH
        )
        url = raw.json()["data"]["result"]["images"][0]["url"]
        assert isinstance(url, str) == (parent == "grid-urlstring")
        unified = parse_task(raw.json())
        assert unified.state is UpdateState.COMPLETED
        assert unified.image_urls == done.image_urls
    cancelled = (await world.upscale("grid-cancel", "U1"))[-1]
    assert cancelled.state is UpdateState.FAILED
    raw = await world.client.get(
        f"{world.sim_url}/v1/tasks/{cancelled.provider_task_id}", headers=AUTH
    )
    assert raw.json()["data"]["status"] == "cancelled"
    assert parse_task(raw.json()).error_code is ErrorCode.CANCELLED


async def test_parent_without_hd_buttons_is_rejected(world: World) -> None:
    """A ``nohd`` parent offers no HD buttons: the adapter refuses, naming what it offers,
    and nothing is submitted."""
    before = len(world.submissions)
    spec = SubmitSpec("job_1", "grid-nohd", "redo_upscale_4x", None, None)
    with pytest.raises(ProviderRejected) as caught:
        await world.provider.submit(spec)
    offered = caught.value.context["offered"]
    assert offered[:8] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"]
    assert "Redo Upscale (4x)" not in offered
    assert len(world.submissions) == before


async def test_upscale_of_an_upscale_and_its_redo(world: World) -> None:
    """A finished U1 offers Upscale (Subtle); that result offers Redo Upscale (Subtle);
    an index upscale of an upscale is refused."""
    first = (await world.upscale("grid-chain", "U1"))[-1]
    assert "Upscale (Subtle)" in first.buttons
    subtle = (await world.upscale(first.provider_task_id, "upscale_subtle"))[-1]
    assert subtle.state is UpdateState.COMPLETED
    assert "Redo Upscale (Subtle)" in subtle.buttons
    redo = (await world.upscale(subtle.provider_task_id, "redo_upscale_subtle"))[-1]
    assert redo.state is UpdateState.COMPLETED
    with pytest.raises(ProviderRejected, match="invalid image generation request"):
        await world.upscale(first.provider_task_id, "U2")


@pytest.mark.parametrize(
    ("parent", "action", "error_type", "text"),
    [
        ("grid-notready", "U1", ProviderRejected, "task is not in SUCCESS state"),
        ("grid-expired", "U1", ProviderRejected, "task not found"),
        ("grid-expired", "upscale_2x", ProviderRejected, "task not found"),
        ("grid-ratelimit", "U1", ProviderRateLimited, "too many requests"),
        ("grid-nocredits", "U4", ProviderInsufficientCredits, "insufficient quota"),
    ],
)
async def test_submit_error_knobs(
    world: World, parent: str, action: str, error_type: type[ProviderError], text: str
) -> None:
    """The simulator's documented refusals map to our provider errors with their text."""
    with pytest.raises(ProviderError) as caught:
        await world.upscale(parent, action)
    assert type(caught.value) is error_type
    assert text in caught.value.message


async def test_wrong_key_is_auth_failed(world: World) -> None:
    """A wrong Bearer key is a 401, reported as provider_auth_failed."""
    config = ProviderConfig(name="apimart", api_key="wrong", base_url=world.sim_url)
    provider = ApimartProvider(config, world.client)
    with pytest.raises(ProviderAuthFailed):
        await provider.submit(SubmitSpec("job_1", "grid", "U1", None, None))
    with pytest.raises(ProviderAuthFailed):
        await provider.poll("task_anything")


async def test_simulator_validates_bodies_like_the_docs(world: World) -> None:
    """The simulator is strict: bad index, missing task_id, a custom_id the parent does not
    offer (or that is no upscale) and non-JSON are 400s; custom_id wins over index."""
    parent = await world.client.get(f"{world.sim_url}/v1/midjourney/grid-validate", headers=AUTH)
    buttons = {b["label"]: b["customId"] for b in parent.json()["buttons"]}
    for body in (
        {"task_id": "grid-validate"},
        {"task_id": "grid-validate", "index": 0},
        {"task_id": "grid-validate", "index": 5},
        {"task_id": "grid-validate", "index": "1"},
        {"task_id": "grid-validate", "index": True},
        {"index": 1},
        {"task_id": "grid-validate", "custom_id": "MJ::JOB::upsample::1::nothere"},
        {"task_id": "grid-validate", "custom_id": buttons["V1"]},
        {"task_id": "grid-validate", "custom_id": 7},
        [],
    ):
        response = await world.raw_upscale(body)
        assert response.status_code == 400, body
        assert response.json()["error"]["message"]
    bad_json = await world.client.post(
        f"{world.sim_url}/v1/midjourney/generations/upscale", content=b"{", headers=AUTH
    )
    assert bad_json.status_code == 400
    both = await world.raw_upscale(
        {"task_id": "grid-validate", "index": 9, "custom_id": buttons["Upscale (4x)"]}
    )
    assert both.status_code == 200
    assert both.json()["data"][0]["status"] == "submitted"
