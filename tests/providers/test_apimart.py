"""APIMart adapter: documented payloads and looseness, submit building (index and
custom_id), error mapping, and the fact that APIMart never calls back.

Fixtures are copied from docs.apimart.ai (tests/fixtures/apimart). The docs show no
upscale-specific task, no failed or in-progress task and no error bodies: those are
synthesised here from PROVIDERS.md §6 (statuses, ``fail_reason``, ``error`` object,
400 "task is not in SUCCESS state").
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from handlers.providers import PROVIDERS
from handlers.providers.actions import ALL_ACTIONS, LABELS
from handlers.providers.apimart import ApimartProvider, parse_task
from handlers.providers.base import ProviderConfig, SubmitSpec
from receiver.errors import (
    PayloadError,
    ProviderAuthFailed,
    ProviderError,
    ProviderInsufficientCredits,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    Unauthorized,
    UnsupportedAction,
)
from receiver.events import CallbackMode, ErrorCode, UpdateState
from tests.conftest import load_fixture

PARENT = "task_01KQVZAPBW13W63DQNQZT7FCQK"
HD_COMMANDS = {
    "Upscale (Subtle)": "upsample_v7_2x_subtle",
    "Upscale (Creative)": "upsample_v7_2x_creative",
    "Upscale (2x)": "upsample_v5_2x",
    "Upscale (4x)": "upsample_v5_4x",
    "Redo Upscale (Subtle)": "upsample_v7_2x_subtle_redo",
    "Redo Upscale (Creative)": "upsample_v7_2x_creative_redo",
    "Redo Upscale (2x)": "upsample_v5_2x_redo",
    "Redo Upscale (4x)": "upsample_v5_4x_redo",
}
SUBMITTED = {"code": 200, "data": [{"status": "submitted", "task_id": "task_NEW"}]}


def _parent(labels: list[str] | None = None) -> dict[str, Any]:
    """The documented imagine task, with HD buttons added (synthesised customIds)."""
    parent = load_fixture("apimart", "poll_imagine")
    for label in HD_COMMANDS if labels is None else labels:
        parent["buttons"].append(
            {"customId": f"MJ::JOB::{HD_COMMANDS[label]}::1::xxxx", "label": label}
        )
    return parent


class Script:
    """A MockTransport handler: answers the parent GET and the upscale POST, records both."""

    def __init__(self, parent: Any = None, submit: httpx.Response | None = None) -> None:
        self.parent = parent if parent is not None else _parent()
        self.submit = submit or httpx.Response(200, json=SUBMITTED)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET":
            return httpx.Response(200, json=self.parent)
        return self.submit

    @property
    def posted(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


def _provider(handler: Any) -> ApimartProvider:
    config = ProviderConfig(name="apimart", api_key="am-key", base_url="https://apimart.test")
    return ApimartProvider(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def _spec(action: str) -> SubmitSpec:
    return SubmitSpec(
        job_id="job_1", parent_id=PARENT, action=action, callback_url=None, callback_secret=None
    )


# --- parsing -------------------------------------------------------------------------


def test_documented_mj_style_task_is_completed() -> None:
    """The docs' MJ-style task: SUCCESS, "100%", image_urls, buttons as {customId, label}."""
    update = parse_task(load_fixture("apimart", "poll_imagine"))
    assert update.state is UpdateState.COMPLETED
    assert update.provider_task_id == "task_01KV52C0TEJSYZMCG0NCS4YWKK"
    assert update.progress == 100
    assert update.image_url == "https://cdn.apimart.ai/mj_xxxx_0.png"
    assert len(update.image_urls) == 4
    assert update.buttons == ("U1", "V1")
    assert update.correlation_id is None


def test_documented_unified_task_reads_url_arrays() -> None:
    """The docs' unified /v1/tasks answer: {code, data}, result.images[].url an array."""
    update = parse_task(load_fixture("apimart", "poll_task_unified"))
    assert update.state is UpdateState.COMPLETED
    assert update.provider_task_id == "task_01KA040M0HP1GJWBJYZMKX1XS1"
    assert update.image_url is not None
    assert update.image_url.endswith("image_task_01KA0413RT2GGNZJ9GWQ4PXF2F_0.png")


def test_unified_url_may_be_a_string() -> None:
    """The docs' other version of the unified example gives url as a string."""
    body = load_fixture("apimart", "poll_task_unified")
    body["data"]["result"]["images"] = [{"url": "https://u/1.png"}, {"url": ["https://u/2.png"]}]
    assert parse_task(body).image_urls == ("https://u/1.png", "https://u/2.png")


def test_upscale_success_has_one_image_and_hd_buttons() -> None:
    """Synthesised upscale success (PROVIDERS.md §6 [I]): one image_urls entry."""
    update = parse_task(
        {
            "id": "task_UP",
            "status": "SUCCESS",
            "action": "UPSCALE",
            "progress": "100%",
            "image_urls": ["https://cdn.apimart.ai/mj_xxxx_1.png"],
            "buttons": [
                {"customId": "MJ::JOB::upsample_v7_2x_subtle::1::a", "label": "Upscale (Subtle)"}
            ],
        }
    )
    assert update.image_urls == ("https://cdn.apimart.ai/mj_xxxx_1.png",)
    assert update.buttons == ("Upscale (Subtle)",)


@pytest.mark.parametrize(
    ("status", "progress", "expected"),
    [
        ("NOT_START", "0%", 0),
        ("SUBMITTED", "0%", 0),
        ("IN_PROGRESS", "42%", 42),
        ("MODAL", "50%", 50),
        ("pending", 0, 0),
        ("processing", 37, 37),
        ("IN_PROGRESS", None, None),
    ],
)
def test_running_statuses_are_progress(status: str, progress: Any, expected: int | None) -> None:
    """Every non-terminal status of either shape is progress, "42%" read as 42."""
    update = parse_task({"id": "t", "status": status, "progress": progress})
    assert update.state is UpdateState.PROGRESS
    assert update.progress == expected


def test_failures_read_fail_reason_and_moderation() -> None:
    """Synthesised FAILURE bodies: fail_reason is the message; moderation wording → moderated."""
    failed = parse_task(
        {
            "id": "t",
            "status": "FAILURE",
            "progress": "0%",
            "fail_reason": "task is not in SUCCESS state",
        }
    )
    assert failed.state is UpdateState.FAILED
    assert failed.error_code is ErrorCode.FAILED
    assert failed.error_message == "task is not in SUCCESS state"
    banned = parse_task({"id": "t", "status": "FAILURE", "fail_reason": "Banned prompt detected"})
    assert banned.error_code is ErrorCode.MODERATED
    bare = parse_task({"id": "t", "status": "FAILURE"})
    assert bare.error_message == "apimart reported the task failed"


def test_unified_failures_and_cancellation() -> None:
    """Unified failed reads error{message} (or a string); cancelled is CANCELLED."""
    failed = parse_task(
        {
            "code": 200,
            "data": {"id": "t", "status": "failed", "error": {"message": "nsfw", "code": 1}},
        }
    )
    assert failed.error_code is ErrorCode.MODERATED
    assert failed.error_message == "nsfw"
    text = parse_task({"code": 200, "data": {"id": "t", "status": "failed", "error": "boom"}})
    assert text.error_message == "boom"
    cancelled = parse_task({"code": 200, "data": {"id": "t", "status": "cancelled"}})
    assert cancelled.error_code is ErrorCode.CANCELLED
    assert cancelled.error_message == "apimart cancelled the task"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "body"),
        ({"status": "SUCCESS"}, "id"),
        ({"id": "t"}, "status"),
        ({"id": "t", "status": "DONE-ISH"}, "status"),
        ({"id": "t", "status": "SUCCESS"}, "image_urls"),
        ({"id": "t", "status": "SUCCESS", "image_urls": []}, "image_urls"),
        ({"id": "t", "status": "SUCCESS", "image_urls": [1]}, "image_urls"),
        ({"id": "t", "status": "IN_PROGRESS", "progress": "lots"}, "progress"),
        ({"id": "t", "status": "SUCCESS", "image_urls": ["u"], "buttons": "U1"}, "buttons"),
        ({"id": "t", "status": "SUCCESS", "image_urls": ["u"], "buttons": ["U1"]}, "buttons[0]"),
        (
            {"id": "t", "status": "SUCCESS", "image_urls": ["u"], "buttons": [{"label": "U1"}]},
            "buttons[0].customId",
        ),
        ({"code": 200, "data": []}, "data"),
        ({"code": 200, "data": {"status": "completed"}}, "data.id"),
        ({"code": 200, "data": {"id": "t", "status": "completed", "result": []}}, "data.result"),
        (
            {"code": 200, "data": {"id": "t", "status": "completed", "result": {"images": []}}},
            "data.result.images",
        ),
        (
            {
                "code": 200,
                "data": {"id": "t", "status": "completed", "result": {"images": [{"url": 3}]}},
            },
            "data.result.images[0].url",
        ),
    ],
)
def test_unreadable_tasks_name_the_field(payload: Any, field: str) -> None:
    """Anything unreadable is a PayloadError naming the field."""
    with pytest.raises(PayloadError) as caught:
        parse_task(payload)
    assert caught.value.field == field


# --- submit --------------------------------------------------------------------------


async def test_grid_upscale_sends_the_documented_index_body() -> None:
    """U1 is the docs' request (task_id + index 1; we send no speed), Bearer-authorised,
    and the docs' answer with data as an ARRAY yields data[0].task_id."""
    script = Script(submit=httpx.Response(200, json=load_fixture("apimart", "submit_response")))
    result = await _provider(script).submit(_spec("U1"))
    assert result.provider_task_id == "task_01KV52C0TEJSYZMCG0NCS4YWKK"
    (request,) = script.requests  # no parent lookup for U1-U4
    assert request.method == "POST"
    assert str(request.url) == "https://apimart.test/v1/midjourney/generations/upscale"
    assert request.headers["authorization"] == "Bearer am-key"
    documented = load_fixture("apimart", "submit_request")
    assert script.posted == [{"task_id": documented["task_id"], "index": documented["index"]}]


@pytest.mark.parametrize(("action", "index"), [("U1", 1), ("U2", 2), ("U3", 3), ("U4", 4)])
async def test_u_buttons_map_to_index_one_to_four(action: str, index: int) -> None:
    """U1-U4 are index 1-4 (one-based, unlike Kie)."""
    script = Script()
    await _provider(script).submit(_spec(action))
    assert script.posted == [{"task_id": PARENT, "index": index}]


@pytest.mark.parametrize("action", [a for a in ALL_ACTIONS if not a.startswith("U")])
async def test_hd_actions_submit_the_parents_custom_id(action: str) -> None:
    """Each HD action reads GET /v1/midjourney/{parent} and submits the customId of the
    button whose label is the Midjourney label."""
    script = Script()
    await _provider(script).submit(_spec(action))
    lookup = script.requests[0]
    assert lookup.method == "GET"
    assert lookup.url.path == f"/v1/midjourney/{PARENT}"
    assert lookup.headers["authorization"] == "Bearer am-key"
    command = HD_COMMANDS[LABELS[action]]
    assert script.posted == [{"task_id": PARENT, "custom_id": f"MJ::JOB::{command}::1::xxxx"}]


async def test_documented_hd_request_body() -> None:
    """upscale_subtle on a parent offering the v7 subtle button is the docs' HD request."""
    script = Script()
    await _provider(script).submit(_spec("upscale_subtle"))
    assert script.posted == [load_fixture("apimart", "submit_request_hd")]


async def test_wrapped_parent_and_object_data_are_accepted() -> None:
    """A parent wrapped in {code, data} and a submit answer whose data is an object work."""
    script = Script(
        parent={"code": 200, "data": _parent(["Upscale (2x)"])},
        submit=httpx.Response(200, json={"code": 200, "data": {"task_id": "task_OBJ"}}),
    )
    result = await _provider(script).submit(_spec("upscale_2x"))
    assert result.provider_task_id == "task_OBJ"
    assert script.posted[0]["custom_id"] == "MJ::JOB::upsample_v5_2x::1::xxxx"


async def test_missing_button_is_rejected_naming_the_offered_labels() -> None:
    """A parent without the button is ProviderRejected naming what it offers; nothing is posted."""
    script = Script(parent=load_fixture("apimart", "poll_imagine"))
    with pytest.raises(ProviderRejected) as caught:
        await _provider(script).submit(_spec("upscale_creative"))
    assert "'Upscale (Creative)'" in caught.value.message
    assert "U1, V1" in caught.value.message
    assert caught.value.context["offered"] == ["U1", "V1"]
    assert caught.value.http_status == 422
    assert script.posted == []


async def test_unreadable_parent_buttons_are_unavailable() -> None:
    """A parent whose buttons we cannot read is the provider's fault: ProviderUnavailable."""
    script = Script(parent={"id": PARENT, "status": "SUCCESS", "buttons": "U1"})
    with pytest.raises(ProviderUnavailable, match="buttons"):
        await _provider(script).submit(_spec("upscale_4x"))


async def test_every_action_is_supported() -> None:
    """APIMart can do all twelve actions; unknown names are UnsupportedAction."""
    provider = _provider(Script())
    assert provider.supported_actions() == ALL_ACTIONS
    with pytest.raises(UnsupportedAction):
        await provider.submit(_spec("V1"))


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (
            400,
            {"code": 400, "error": {"message": "task is not in SUCCESS state"}},
            ProviderRejected,
        ),
        (400, {"message": "index out of range"}, ProviderRejected),
        (401, {"error": "invalid token"}, ProviderAuthFailed),
        (403, {"error": {"message": "not your task"}}, ProviderAuthFailed),
        (402, {"error": {"message": "insufficient quota"}}, ProviderInsufficientCredits),
        (429, {"error": {"message": "slow down"}}, ProviderRateLimited),
        (500, {"error": {"message": "boom"}}, ProviderUnavailable),
        (503, None, ProviderUnavailable),
        (200, {"code": 500, "message": "internal"}, ProviderUnavailable),
    ],
)
async def test_submit_errors_map_to_provider_errors(
    status: int, body: Any, error_type: type[ProviderError]
) -> None:
    """HTTP (and body-code) failures map to our provider error codes with their text."""
    answer = httpx.Response(status, json=body) if body else httpx.Response(status, text="down")
    with pytest.raises(ProviderError) as caught:
        await _provider(Script(submit=answer)).submit(_spec("U2"))
    assert type(caught.value) is error_type
    if isinstance(body, dict):
        error = body.get("error")
        text = error.get("message") if isinstance(error, dict) else error or body.get("message")
        assert text in caught.value.message


async def test_accepted_submit_without_task_id_is_unavailable() -> None:
    """An accepted submit naming no task is ProviderUnavailable."""
    script = Script(submit=httpx.Response(200, json={"code": 200, "data": []}))
    with pytest.raises(ProviderUnavailable, match=r"data\[0\]\.task_id"):
        await _provider(script).submit(_spec("U1"))


async def test_poll_reads_the_mj_style_task() -> None:
    """poll GETs /v1/midjourney/{task_id} and parses it; an expired task (404) is rejected."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/gone"):
            return httpx.Response(404, json={"error": {"message": "task not found"}})
        return httpx.Response(
            200, json={"id": "task_X", "status": "IN_PROGRESS", "progress": "40%"}
        )

    update = await _provider(handler).poll("task_X")
    assert update.state is UpdateState.PROGRESS
    assert update.progress == 40
    assert seen[0].url.path == "/v1/midjourney/task_X"
    assert seen[0].headers["authorization"] == "Bearer am-key"
    with pytest.raises(ProviderRejected, match="task not found"):
        await _provider(handler).poll("gone")


def test_apimart_never_calls_back() -> None:
    """APIMart is polled: both callback checks refuse, and it is registered as POLL."""
    provider = _provider(Script())
    with pytest.raises(Unauthorized):
        provider.verify_callback({}, b"{}", None)
    with pytest.raises(Unauthorized):
        provider.verify_account_callback({}, b"{}")
    assert provider.parse_callback(load_fixture("apimart", "poll_imagine")).state is (
        UpdateState.COMPLETED
    )
    assert PROVIDERS["apimart"] is ApimartProvider
    assert ApimartProvider.callback_mode is CallbackMode.POLL
    assert ApimartProvider.default_base_url == "https://api.apimart.ai"
