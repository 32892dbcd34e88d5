"""ImaginePro adapter: request building, answer and error mapping, payload parsing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from handlers.providers import PROVIDERS
from handlers.providers.actions import ALL_ACTIONS, LABELS
from handlers.providers.base import ProviderConfig, SubmitResult, SubmitSpec
from handlers.providers.imaginepro import SUPPORTED, ImagineProProvider, parse_message
from receiver.errors import (
    PayloadError,
    ProviderAuthFailed,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    Unauthorized,
    UnsupportedAction,
)
from receiver.events import ErrorCode, UpdateState
from tests.conftest import load_fixture

BASE = "https://imaginepro.test"
KEY = "sk-test-key"
CALLBACK = "https://relay.test/callbacks/imaginepro/tok"


def _provider(
    handler: Callable[[httpx.Request], httpx.Response],
) -> tuple[ImagineProProvider, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    config = ProviderConfig(name="imaginepro", api_key=KEY, base_url=BASE)
    return ImagineProProvider(config, client), client


def _spec(action: str = "upscale_2x", callback: str | None = CALLBACK) -> SubmitSpec:
    return SubmitSpec(
        job_id="job_abc",
        parent_id="e57fb09d-25f0-49f7-8f0f-2e902ffe9fdd",
        action=action,
        callback_url=callback,
        callback_secret=None,
    )


async def _submit(status: int, body: Any, action: str = "upscale_2x") -> SubmitResult:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    provider, client = _provider(handler)
    async with client:
        return await provider.submit(_spec(action))


def test_registry_and_defaults() -> None:
    """The registry names the ImaginePro adapter, which calls back and has no job cap."""
    assert PROVIDERS["imaginepro"] is ImagineProProvider
    assert ImagineProProvider.default_base_url == "https://api.imaginepro.ai"
    assert ImagineProProvider.max_jobs_default is None
    assert ImagineProProvider.mints_job_secret is False


def test_supported_actions_leave_out_redo_subtle_and_creative() -> None:
    """ImaginePro supports every upscale but the two redo buttons its docs do not list."""
    provider, _client = _provider(lambda request: httpx.Response(500))
    supported = provider.supported_actions()
    assert set(supported) == set(ALL_ACTIONS) - {"redo_upscale_subtle", "redo_upscale_creative"}


@pytest.mark.parametrize("action", SUPPORTED)
async def test_submit_builds_the_documented_request(action: str) -> None:
    """Each action posts messageId, the exact Midjourney label, our job id as ref and the
    callback URL as webhookOverride, with a Bearer key, and returns the messageId."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=load_fixture("imaginepro", "submit_response"))

    provider, client = _provider(handler)
    async with client:
        result = await provider.submit(_spec(action))
    assert result == SubmitResult(provider_task_id="your-message-id", existing=False)
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/api/v1/nova/button"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert body == {
        "messageId": "e57fb09d-25f0-49f7-8f0f-2e902ffe9fdd",
        "button": LABELS[action],
        "ref": "job_abc",
        "webhookOverride": CALLBACK,
    }
    documented = load_fixture("imaginepro", "submit_request")
    assert set(documented) <= set(body)


async def test_submit_matches_the_documented_request_fixture() -> None:
    """The docs' example request (Upscale (2x) on a parent) is what upscale_2x sends."""
    documented = load_fixture("imaginepro", "submit_request")
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"success": True, "messageId": "m1"})

    provider, client = _provider(handler)
    async with client:
        await provider.submit(_spec("upscale_2x", callback=None))
    assert seen == [{**documented, "ref": "job_abc"}]


@pytest.mark.parametrize("action", ["redo_upscale_subtle", "redo_upscale_creative"])
async def test_unlisted_actions_are_refused_before_any_request(action: str) -> None:
    """Redo Upscale (Subtle)/(Creative) raise UnsupportedAction and send nothing."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"success": True, "messageId": "m"})

    provider, client = _provider(handler)
    async with client:
        with pytest.raises(UnsupportedAction):
            await provider.submit(_spec(action))
    assert sent == []


@pytest.mark.parametrize("success", [True, "PROCESSING", "QUEUED", "DONE"])
async def test_submit_accepts_boolean_or_status_success(success: Any) -> None:
    """``success`` may be the documented boolean or the SDK's status string."""
    result = await _submit(200, {"success": success, "messageId": "m-1", "createdAt": "x"})
    assert result.provider_task_id == "m-1"


@pytest.mark.parametrize(
    "body",
    [
        {"success": False, "error": "Insufficient credits"},
        {"success": "FAIL", "messageId": "m-1"},
        {"success": True, "messageId": "m-1", "error": "button not available"},
    ],
)
async def test_submit_failure_in_a_200_is_rejected(body: dict[str, Any]) -> None:
    """``success: false`` (or FAIL) or an ``error`` text in a 200 is ProviderRejected."""
    with pytest.raises(ProviderRejected) as caught:
        await _submit(200, body)
    assert caught.value.provider == "imaginepro"


async def test_submit_rejection_carries_the_error_text() -> None:
    """The documented ``error`` string reaches the exception message."""
    with pytest.raises(ProviderRejected, match="Insufficient credits"):
        await _submit(200, {"success": False, "error": "Insufficient credits"})


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (401, {"message": "Unauthorized", "statusCode": 401}, ProviderAuthFailed, "Unauthorized"),
        (
            400,
            {"message": ["button should not be empty"], "error": "Bad Request", "statusCode": 400},
            ProviderRejected,
            "button should not be empty",
        ),
        (400, {"success": False, "error": "Button U9 is unknown"}, ProviderRejected, "U9"),
        (404, {"message": "message m not found", "statusCode": 404}, ProviderRejected, "not found"),
        (429, {"message": "Too Many Requests", "statusCode": 429}, ProviderRateLimited, "Too"),
        (500, {"message": "boom", "statusCode": 500}, ProviderUnavailable, "boom"),
    ],
)
async def test_submit_error_statuses_map_to_provider_errors(
    status: int, body: dict[str, Any], error: type[ProviderError], text: str
) -> None:
    """HTTP errors map to our provider error codes, with ImaginePro's message text."""
    with pytest.raises(error, match=text) as caught:
        await _submit(status, body)
    assert caught.value.status == status


async def test_submit_without_message_id_is_unavailable() -> None:
    """A success answer with no messageId cannot be tracked: ProviderUnavailable."""
    with pytest.raises(ProviderUnavailable):
        await _submit(200, {"success": True})


async def test_submit_never_echoes_the_api_key() -> None:
    """A refused key does not appear in the error raised."""
    with pytest.raises(ProviderAuthFailed) as caught:
        await _submit(401, {"message": "Unauthorized", "statusCode": 401})
    assert KEY not in str(caught.value)
    assert KEY not in json.dumps(caught.value.body())


async def test_poll_fetches_the_message() -> None:
    """Poll GETs /api/v1/message/fetch/{id} with the Bearer key and parses the message."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=load_fixture("imaginepro", "callback_done"))

    provider, client = _provider(handler)
    async with client:
        update = await provider.poll("your-button-message-id")
    assert seen[0].method == "GET"
    assert str(seen[0].url) == f"{BASE}/api/v1/message/fetch/your-button-message-id"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert update.state is UpdateState.COMPLETED


async def test_poll_of_an_unknown_message_is_rejected() -> None:
    """A 404 from the fetch endpoint is ProviderRejected."""
    provider, client = _provider(lambda request: httpx.Response(404, json={"message": "nope"}))
    async with client:
        with pytest.raises(ProviderRejected):
            await provider.poll("missing")


def test_callbacks_need_no_secret_and_account_callbacks_are_refused() -> None:
    """verify_callback accepts anything (the URL token is the check); account-level
    callbacks cannot be verified and are refused."""
    provider, _client = _provider(lambda request: httpx.Response(500))
    provider.verify_callback({}, b"{}", None)
    provider.verify_callback({"x": "y"}, b"{}", "secret")
    with pytest.raises(Unauthorized):
        provider.verify_account_callback({}, b"{}")


def test_done_fixture_parses_to_completed() -> None:
    """The documented DONE message is a completed update with the CDN uri, its parent,
    its buttons, and no correlation id (``ref`` is empty)."""
    provider, _client = _provider(lambda request: httpx.Response(500))
    update = provider.parse_callback(load_fixture("imaginepro", "callback_done"))
    assert update.provider_task_id == "your-button-message-id"
    assert update.state is UpdateState.COMPLETED
    assert update.progress == 100
    assert update.image_url == "https://cdn.imaginepro.ai/storage/123/123/123.png"
    assert update.image_urls == ("https://cdn.imaginepro.ai/storage/123/123/123.png",)
    assert update.parent_id == "your-message-id"
    assert update.correlation_id is None
    assert update.buttons[:4] == ("U1", "U2", "U3", "U4")
    assert "🔄" in update.buttons
    assert len(update.buttons) == 13


def test_processing_body_parses_to_progress() -> None:
    """The in-progress body (synthesised from PROVIDERS.md §2's field list; the docs show
    none) is a progress update carrying the percentage and our job id from ``ref``."""
    update = parse_message(load_fixture("imaginepro", "synth_callback_processing"))
    assert update.state is UpdateState.PROGRESS
    assert update.progress == 42
    assert update.correlation_id == "job-123"
    assert update.parent_id == "e57fb09d-25f0-49f7-8f0f-2e902ffe9fdd"
    assert update.image_url is None


def test_fail_body_parses_to_failed() -> None:
    """The failure body (synthesised from PROVIDERS.md §2; the docs show none) is a failed
    update with code ``failed`` and ImaginePro's error text."""
    update = parse_message(load_fixture("imaginepro", "synth_callback_fail"))
    assert update.state is UpdateState.FAILED
    assert update.error_code is ErrorCode.FAILED
    assert update.error_message == "Job failed: Midjourney returned an error"
    assert update.correlation_id == "job-123"


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("QUEUED", UpdateState.PROGRESS),
        ("PROCESSING", UpdateState.PROGRESS),
        ("DONE", UpdateState.COMPLETED),
        ("FAIL", UpdateState.FAILED),
        ("done", UpdateState.COMPLETED),
    ],
)
def test_every_status_maps(status: str, state: UpdateState) -> None:
    """QUEUED and PROCESSING are progress, DONE completed, FAIL failed (any case)."""
    body = {**load_fixture("imaginepro", "callback_done"), "status": status}
    assert parse_message(body).state is state


@pytest.mark.parametrize(
    "error",
    [
        "Request cancelled due to image filters: banned prompt",
        "Job was blocked by Midjourney moderation",
        "Sorry! Our AI moderators feel your prompt might be against our community standards.",
    ],
)
def test_moderation_wording_is_moderated(error: str) -> None:
    """A FAIL whose error text speaks of moderation is error code ``moderated``."""
    body = {**load_fixture("imaginepro", "synth_callback_fail"), "error": error}
    update = parse_message(body)
    assert update.error_code is ErrorCode.MODERATED
    assert update.error_message == error


def test_fail_without_error_text_still_fails() -> None:
    """A FAIL with no ``error`` field is a failure with a generic message."""
    body = load_fixture("imaginepro", "synth_callback_fail")
    del body["error"]
    update = parse_message(body)
    assert update.state is UpdateState.FAILED
    assert update.error_code is ErrorCode.FAILED
    assert update.error_message


def test_parent_may_be_called_original_message_id() -> None:
    """The apidog schema's ``originalMessageId`` is read as the parent too."""
    body = load_fixture("imaginepro", "callback_done")
    body["originalMessageId"] = body.pop("originatingMessageId")
    assert parse_message(body).parent_id == "your-message-id"


@pytest.mark.parametrize(("value", "expected"), [(42, 42), (42.4, 42), ("42", 42), ("42%", 42)])
def test_progress_may_be_a_number_or_a_string(value: Any, expected: int) -> None:
    """``progress`` is read from a number or a (percent) string."""
    body = {**load_fixture("imaginepro", "synth_callback_processing"), "progress": value}
    assert parse_message(body).progress == expected


def test_missing_progress_is_none() -> None:
    """A QUEUED body without progress has no percentage."""
    body = load_fixture("imaginepro", "synth_callback_processing")
    del body["progress"]
    body["status"] = "QUEUED"
    assert parse_message(body).progress is None


def test_image_falls_back_to_original_url() -> None:
    """Without ``uri`` the Discord ``originalUrl`` is the image."""
    body = load_fixture("imaginepro", "callback_done")
    del body["uri"]
    update = parse_message(body)
    assert update.image_url == "https://cdn.discordapp.com/attachments/123/123/123.png"


def test_ref_is_the_correlation_id() -> None:
    """``ref`` (our job id, as we submit it) becomes the correlation id."""
    body = {**load_fixture("imaginepro", "callback_done"), "ref": "job_abc"}
    assert parse_message(body).correlation_id == "job_abc"


def _without(key: str) -> dict[str, Any]:
    body = copy.deepcopy(load_fixture("imaginepro", "callback_done"))
    del body[key]
    return body


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "body"),
        ("DONE", "body"),
        (_without("messageId"), "messageId"),
        ({**_without("messageId"), "messageId": ""}, "messageId"),
        (_without("status"), "status"),
        ({**_without("status"), "status": 3}, "status"),
        ({**_without("status"), "status": "RUNNING"}, "status"),
        ({**_without("progress"), "progress": "soon"}, "progress"),
        ({**_without("progress"), "progress": True}, "progress"),
        ({**_without("buttons"), "buttons": "U1"}, "buttons"),
        ({**_without("buttons"), "buttons": [1, 2]}, "buttons"),
        ({k: v for k, v in _without("uri").items() if k != "originalUrl"}, "uri"),
    ],
)
def test_unreadable_bodies_name_the_field(payload: Any, field: str) -> None:
    """Anything beyond the documented looseness is a PayloadError naming the field."""
    with pytest.raises(PayloadError) as caught:
        parse_message(payload)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("status", "content", "error"),
    [
        (502, b"<html>Bad Gateway</html>", ProviderUnavailable),
        (400, b'["not", "an", "object"]', ProviderRejected),
        (400, b'{"statusCode": 400}', ProviderRejected),
    ],
)
async def test_error_bodies_that_are_not_imaginepros_shape_still_map(
    status: int, content: bytes, error: type[ProviderError]
) -> None:
    """An error answer that is not JSON, not an object, or has no text still maps by
    its HTTP status."""
    provider, client = _provider(lambda request: httpx.Response(status, content=content))
    async with client:
        with pytest.raises(error):
            await provider.submit(_spec())


async def test_success_false_as_a_string_is_a_refusal() -> None:
    """`success: "false"` (a string, as loose clients send it) is not taken as success."""
    from handlers.providers.base import ProviderConfig, SubmitSpec
    from handlers.providers.imaginepro import ImagineProProvider
    from receiver.errors import ProviderRejected

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": "false", "messageId": "m"})

    config = ProviderConfig(name="imaginepro", api_key="k", base_url="https://api.test")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ProviderRejected):
            await ImagineProProvider(config, client).submit(SubmitSpec("j", "p", "U1", None, None))


async def test_falls_back_to_the_legacy_endpoints_on_404() -> None:
    """An ImaginePro without the "nova" endpoints (legacy docs) gets the legacy paths,
    for submit and for polling, and the adapter remembers it."""
    from handlers.providers.base import ProviderConfig, SubmitSpec
    from handlers.providers.imaginepro import ImagineProProvider

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if "/nova/" in request.url.path or "/message/fetch/" in request.url.path:
            return httpx.Response(404, json={"message": "Not Found", "statusCode": 404})
        if request.url.path == "/api/v1/midjourney/button":
            return httpx.Response(200, json={"success": True, "messageId": "m1"})
        return httpx.Response(
            200, json={"messageId": "m1", "status": "DONE", "uri": "https://i/1.png"}
        )

    config = ProviderConfig(name="imaginepro", api_key="k", base_url="https://api.test")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = ImagineProProvider(config, client)
        result = await provider.submit(SubmitSpec("j", "p", "U1", "https://cb", None))
        assert result.provider_task_id == "m1"
        update = await provider.poll("m1")
        assert update.image_url == "https://i/1.png"
    assert seen == [
        "/api/v1/nova/button",
        "/api/v1/midjourney/button",
        "/api/v1/midjourney/message/m1",
    ]
