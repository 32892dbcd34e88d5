"""The Kie adapter driving the Kie simulator over real loopback sockets: submit, one signed
terminal callback to a local receiver, record-info polling, knobs and strict validation."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers.providers.base import ProviderConfig, SubmitSpec
from handlers.providers.kie import KieProvider
from receiver.errors import (
    ProviderAuthFailed,
    ProviderError,
    ProviderInsufficientCredits,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    Unauthorized,
    UnsupportedAction,
)
from receiver.events import ErrorCode, ProviderUpdate, UpdateState
from simulators import create_simulator_app, default_keys
from simulators.clock import ManualClock
from simulators.kie import DEFAULT_KEY, create_app
from tests.helpers.recorder import Received
from tests.helpers.servers import serve_app

HMAC_KEY = "sim-kie-hmac"
TASK_TIME_S = 60.0  # far past any task's delay and duration (the knobs' defaults: 90 ms)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.asyncio(loop_scope="module")


class Hooks:
    """A local callback receiver that files each POST under its path's last segment."""

    def __init__(self) -> None:
        self.received: dict[str, list[Received]] = defaultdict(list)

    async def _handle(self, request: Request) -> Response:
        received = Received(dict(request.headers), await request.body())
        self.received[request.path_params["key"]].append(received)
        return Response("ok")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/callbacks/kie/{key}", self._handle, methods=["POST"])])

    async def wait(self, key: str) -> list[Received]:
        async with asyncio.timeout(5):
            while not self.received[key]:
                await asyncio.sleep(0.005)
        return self.received[key]


@dataclass
class World:
    app: Starlette
    hooks: Hooks
    provider: KieProvider
    sim_url: str
    hook_url: str
    client: httpx.AsyncClient
    clock: ManualClock

    def spec(self, parent: str, action: str = "U1") -> SubmitSpec:
        """A submit whose callback goes to its own path on the receiver."""
        return SubmitSpec(
            job_id=f"job_{uuid.uuid4().hex}",
            parent_id=parent,
            action=action,
            callback_url=f"{self.hook_url}/callbacks/kie/{uuid.uuid4().hex}",
            callback_secret=None,
        )

    def provider_with(self, **options: Any) -> KieProvider:
        config = ProviderConfig(
            name="kie", api_key=DEFAULT_KEY, base_url=self.sim_url, options=options
        )
        return KieProvider(config, self.client)

    async def callback(self, spec: SubmitSpec) -> Received:
        """The one callback of ``spec``'s task, once the simulator has finished sending
        (the clock is moved past every task's end first)."""
        assert spec.callback_url is not None
        key = spec.callback_url.rsplit("/", 1)[1]
        self.clock.advance(TASK_TIME_S)
        await self.hooks.wait(key)
        await self.app.state.sender.drain()
        (received,) = self.hooks.received[key]  # Kie sends one terminal callback only
        return received


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world() -> AsyncIterator[World]:
    """One simulator, receiver and client for the whole module (tests use their own
    parent ids and callback paths). The simulator's clock moves only when a test moves it."""
    clock = ManualClock()
    app = create_app(DEFAULT_KEY, hmac_key=HMAC_KEY, clock=clock)
    hooks = Hooks()
    async with (
        serve_app(app) as sim_url,
        serve_app(hooks.app()) as hook_url,
        httpx.AsyncClient(timeout=5) as client,
    ):
        config = ProviderConfig(
            name="kie",
            api_key=DEFAULT_KEY,
            base_url=sim_url,
            options={"webhook_hmac_key": HMAC_KEY},
        )
        yield World(app, hooks, KieProvider(config, client), sim_url, hook_url, client, clock)
        clock.advance(TASK_TIME_S)
        await app.state.sender.drain()


async def poll_until_terminal(
    provider: KieProvider, task_id: str, clock: ManualClock | None = None
) -> list[ProviderUpdate]:
    """Poll to a terminal update; with ``clock``, poll once, then move it past the task's end."""
    seen: list[ProviderUpdate] = []
    if clock is not None:
        seen.append(await provider.poll(task_id))
        clock.advance(TASK_TIME_S)
    async with asyncio.timeout(5):
        while not seen or not seen[-1].state.terminal:
            if seen:
                await asyncio.sleep(0.01)
            seen.append(await provider.poll(task_id))
    return seen


@pytest.mark.parametrize(("action", "index"), [("U1", 0), ("U2", 1), ("U3", 2), ("U4", 3)])
async def test_every_action_completes_by_poll_and_signed_callback(
    world: World, action: str, index: int
) -> None:
    """Each U action is accepted with its 0-based imageIndex, polls from generating to
    done, and the one callback passes the adapter's HMAC check and names the same image."""
    spec = world.spec(f"grid-{action}", action)
    result = await world.provider.submit(spec)
    assert world.app.state.book.submissions[-1]["imageIndex"] == index
    seen = await poll_until_terminal(world.provider, result.provider_task_id, world.clock)
    assert seen[0].state is UpdateState.PROGRESS
    done = seen[-1]
    assert done.state is UpdateState.COMPLETED
    assert done.provider_task_id == result.provider_task_id
    assert done.parent_id == f"grid-{action}"
    assert done.image_url == f"{world.sim_url}/images/{result.provider_task_id}.png"

    received = await world.callback(spec)
    world.provider.verify_callback(received.headers, received.body, None)
    world.provider.verify_account_callback(received.headers, received.body)
    update = world.provider.parse_callback(received.json)
    assert update.state is UpdateState.COMPLETED
    assert update.provider_task_id == result.provider_task_id
    assert update.image_urls == (done.image_url,)

    image = await world.client.get(done.image_url)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(PNG_MAGIC)


async def test_hd_actions_are_refused_before_any_request(world: World) -> None:
    """Kie has no HD upscales: the adapter refuses them and the simulator sees nothing."""
    before = len(world.app.state.book.submissions)
    with pytest.raises(UnsupportedAction):
        await world.provider.submit(world.spec("grid", "upscale_2x"))
    assert len(world.app.state.book.submissions) == before


@pytest.mark.parametrize(
    ("parent", "error_code", "message"),
    [
        ("grid-fail", ErrorCode.FAILED, "Image generation failed"),
        ("grid-moderate", ErrorCode.MODERATED, "content moderation"),
        ("grid-cancel", ErrorCode.FAILED, "created but generation failed"),
    ],
)
async def test_failure_knobs_give_failed_updates(
    world: World, parent: str, error_code: ErrorCode, message: str
) -> None:
    """fail / moderate / cancel end with successFlag 2 / 2 / 3 and a code-500 callback."""
    spec = world.spec(parent)
    result = await world.provider.submit(spec)
    polled = (await poll_until_terminal(world.provider, result.provider_task_id, world.clock))[-1]
    assert polled.state is UpdateState.FAILED
    assert polled.error_code is error_code
    assert polled.error_message is not None
    assert message.lower() in polled.error_message.lower()
    received = await world.callback(spec)
    assert received.json["code"] == 500
    world.provider.verify_callback(received.headers, received.body, None)
    update = world.provider.parse_callback(received.json)
    assert update.state is UpdateState.FAILED
    assert update.error_code is error_code


async def test_tampered_callback_urls_differ_from_record_info(world: World) -> None:
    """With ``tamper`` the callback's resultUrls point elsewhere than record-info's, which
    is why the relay confirms Kie callbacks by polling."""
    spec = world.spec("grid-tamper")
    result = await world.provider.submit(spec)
    received = await world.callback(spec)
    world.provider.verify_callback(received.headers, received.body, None)  # signature is fine
    claimed = world.provider.parse_callback(received.json)
    confirmed = (await poll_until_terminal(world.provider, result.provider_task_id))[-1]
    assert claimed.image_url != confirmed.image_url
    assert confirmed.image_url == f"{world.sim_url}/images/{result.provider_task_id}.png"


@pytest.mark.parametrize("parent", ["grid-badsig", "grid-stalesig"])
async def test_bad_or_stale_signatures_are_refused(world: World, parent: str) -> None:
    """A callback signed with the wrong key, or ten minutes ago, is Unauthorized."""
    spec = world.spec(parent)
    await world.provider.submit(spec)
    received = await world.callback(spec)
    with pytest.raises(Unauthorized):
        world.provider.verify_callback(received.headers, received.body, None)


async def test_unsigned_callbacks_without_a_key(world: World) -> None:
    """Without an HMAC key the simulator signs nothing: fine for an adapter without a key,
    Unauthorized for one that requires it."""
    spec = world.spec("grid")
    world.app.state.hmac_key = None
    try:
        await world.provider.submit(spec)
        received = await world.callback(spec)
    finally:
        world.app.state.hmac_key = HMAC_KEY
    assert "x-webhook-signature" not in received.headers
    world.provider_with().verify_callback(received.headers, received.body, None)
    with pytest.raises(Unauthorized):
        world.provider.verify_callback(received.headers, received.body, None)


@pytest.mark.parametrize(
    ("parent", "error_type", "code"),
    [
        ("grid-nocredits", ProviderInsufficientCredits, 402),
        ("grid-maintenance", ProviderUnavailable, 455),
        ("grid-featureoff", ProviderRejected, 505),
        ("grid-genfail", ProviderRejected, 501),
        ("grid-ratelimit", ProviderRateLimited, 429),
    ],
)
async def test_submit_error_knobs_map_through_the_body_code(
    world: World, parent: str, error_type: type[ProviderError], code: int
) -> None:
    """Errors arrive as HTTP 200 with a body code, and the adapter maps the code."""
    with pytest.raises(ProviderError) as caught:
        await world.provider.submit(world.spec(parent))
    assert type(caught.value) is error_type
    assert caught.value.status == code


async def test_wrong_key_is_auth_failed(world: World) -> None:
    """A wrong Bearer key is code 401, which the adapter reports as provider_auth_failed."""
    config = ProviderConfig(name="kie", api_key="wrong", base_url=world.sim_url)
    with pytest.raises(ProviderAuthFailed):
        await KieProvider(config, world.client).submit(world.spec("grid"))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, 422),
        ({"imageIndex": 0}, 422),
        ({"taskId": "p"}, 422),
        ({"taskId": "p", "imageIndex": 4}, 422),
        ({"taskId": "p", "imageIndex": -1}, 422),
        ({"taskId": "p", "imageIndex": "1"}, 422),
        ({"taskId": "p", "imageIndex": True}, 422),
        ({"taskId": "p", "imageIndex": 0, "waterMark": 5}, 422),
        ({"taskId": "p", "imageIndex": 0, "callBackUrl": "ftp://x"}, 422),
        ({"taskId": "p", "imageIndex": 0, "callBackUrl": 7}, 422),
        ([], 400),
        ({"taskId": "p", "imageIndex": 3}, 200),
    ],
)
async def test_simulator_validates_bodies_like_the_docs(world: World, body: Any, code: int) -> None:
    """The simulator is strict: wrong bodies get Kie's error codes, always inside HTTP 200."""
    response = await world.client.post(
        f"{world.sim_url}/api/v1/mj/generateUpscale",
        json=body,
        headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
    )
    assert response.status_code == 200
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "msg", "data"}
    bad_json = await world.client.post(
        f"{world.sim_url}/api/v1/mj/generateUpscale",
        content=b"{",
        headers={"Authorization": f"Bearer {DEFAULT_KEY}"},
    )
    assert bad_json.json()["code"] == 400


async def test_unknown_task_poll_is_rejected(world: World) -> None:
    """record-info for an unknown task answers code 404: the poll raises, never guesses."""
    with pytest.raises(ProviderRejected) as caught:
        await world.provider.poll("no-such-task")
    assert caught.value.status == 404


async def test_mounted_simulator_serves_images_under_its_prefix() -> None:
    """Under ``relay simulate`` (all simulators mounted) the image URLs keep the /kie prefix."""
    async with (
        serve_app(create_simulator_app()) as sim_url,
        httpx.AsyncClient(timeout=5) as client,
    ):
        config = ProviderConfig(
            name="kie", api_key=default_keys()["kie"], base_url=f"{sim_url}/kie"
        )
        provider = KieProvider(config, client)
        spec = SubmitSpec("job_1", "grid", "U2", callback_url=None, callback_secret=None)
        result = await provider.submit(spec)
        done = (await poll_until_terminal(provider, result.provider_task_id))[-1]
        assert done.image_url == f"{sim_url}/kie/images/{result.provider_task_id}.png"
        image = await client.get(done.image_url)
        assert image.status_code == 200
        assert image.content.startswith(PNG_MAGIC)
