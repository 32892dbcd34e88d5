"""Apiframe adapter: every documented payload and looseness, submit building, errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from handlers.providers.apiframe import ApiframeProvider, parse_task
from handlers.providers.base import ProviderConfig, SubmitSpec
from receiver.errors import (
    PayloadError,
    ProviderAuthFailed,
    ProviderRejected,
    ProviderUnavailable,
    Unauthorized,
    UnsupportedAction,
)
from receiver.events import ErrorCode, UpdateState
from tests.conftest import load_fixture


def test_documented_final_results_without_status_are_completed() -> None:
    """The docs' upscale-1x and upscale-alt results carry no status: the image means done."""
    for name in ("callback_upscale_1x", "callback_upscale_alt"):
        update = parse_task(load_fixture("apiframe", name))
        assert update.state is UpdateState.COMPLETED
        assert update.provider_task_id == "29e983ca-7e86-4017-a9e3-ef6fe9cd5f2a"
        assert update.image_url == "https://............./xxxxx.png"


def test_documented_progress_has_string_percentage() -> None:
    """The docs' in-progress body has percentage "80" as a string."""
    update = parse_task(load_fixture("apiframe", "callback_progress"))
    assert update.state is UpdateState.PROGRESS
    assert update.progress == 80


@pytest.mark.parametrize("status", ["finished", "completed", "FINISHED"])
def test_finished_and_completed_both_mean_done(status: str) -> None:
    """Docs say finished, the SDK says completed: both are done."""
    update = parse_task(
        {"task_id": "t", "status": status, "image_urls": ["https://a", "https://b"]}
    )
    assert update.state is UpdateState.COMPLETED
    assert update.image_url == "https://a"
    assert update.image_urls == ("https://a", "https://b")


def test_failure_and_moderation() -> None:
    """status failed → failed, with moderation wording → moderated (body synthesised
    from the SDK's `message || error` rule; the docs show no failure example)."""
    failed = parse_task({"task_id": "t", "status": "failed", "message": "Midjourney job failed"})
    assert failed.state is UpdateState.FAILED
    assert failed.error_code is ErrorCode.FAILED
    banned = parse_task({"task_id": "t", "status": "failed", "error": "banned prompt"})
    assert banned.error_code is ErrorCode.MODERATED


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "body"),
        ({"image_url": "x"}, "task_id"),
        ({"task_id": "t"}, "status"),
        ({"task_id": "t", "status": "finished"}, "image_url"),
        ({"task_id": "t", "status": 3}, "status"),
        ({"task_id": "t", "status": "processing", "percentage": "lots"}, "percentage"),
    ],
)
def test_unreadable_payloads_name_the_field(payload: Any, field: str) -> None:
    """Anything unreadable is a PayloadError naming the field."""
    with pytest.raises(PayloadError) as caught:
        parse_task(payload)
    assert caught.value.field == field


def _provider(handler: Any, **options: Any) -> ApiframeProvider:
    config = ProviderConfig(
        name="apiframe", api_key="raw-key", base_url="https://api.test", options=options
    )
    return ApiframeProvider(config, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


async def test_submit_picks_endpoint_and_sends_raw_key_and_secret() -> None:
    """Each action goes to its endpoint with the raw key, webhook_url and webhook_secret."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=load_fixture("apiframe", "submit_response"))

    provider = _provider(handler)
    expected = {
        "U3": ("/upscale-1x", {"index": "3"}),
        "upscale_subtle": ("/upscale-alt", {"type": "subtle"}),
        "upscale_creative": ("/upscale-alt", {"type": "creative"}),
        "upscale_2x": ("/upscale-highres", {"type": "2x"}),
        "upscale_4x": ("/upscale-highres", {"type": "4x"}),
    }
    for action, (path, extra) in expected.items():
        spec = SubmitSpec("job_1", "parent", action, "https://relay/cb/x", "s3cret")
        result = await provider.submit(spec)
        assert result.provider_task_id == "29e983ca-7e86-4017-a9e3-ef6fe9cd5f2a"
        request = seen[-1]
        assert request.url.path == path
        assert request.headers["authorization"] == "raw-key"
        body = json.loads(request.content)
        assert body == {
            "parent_task_id": "parent",
            "webhook_url": "https://relay/cb/x",
            "webhook_secret": "s3cret",
            **extra,
        }
    with pytest.raises(UnsupportedAction):
        await provider.submit(SubmitSpec("j", "p", "redo_upscale_2x", None, None))


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"errors": [{"msg": "Invalid request"}]}, ProviderRejected),
        (401, {}, ProviderAuthFailed),
        (500, {}, ProviderUnavailable),
        (200, {}, ProviderUnavailable),
    ],
)
async def test_submit_errors_map_to_codes(status: int, body: Any, error: type[Exception]) -> None:
    """Documented error answers map to our provider_* codes."""
    provider = _provider(lambda request: httpx.Response(status, json=body))
    with pytest.raises(error):
        await provider.submit(SubmitSpec("j", "p", "U1", None, None))


def test_secret_header_is_checked_in_constant_time_and_account_secret_needed() -> None:
    """x-webhook-secret must equal the job's secret; account callbacks need the account secret."""
    provider = _provider(lambda request: httpx.Response(200), account_webhook_secret="acct")
    provider.verify_callback({"x-webhook-secret": "s"}, b"{}", "s")
    with pytest.raises(Unauthorized):
        provider.verify_callback({"x-webhook-secret": "t"}, b"{}", "s")
    with pytest.raises(Unauthorized):
        provider.verify_callback({}, b"{}", "s")
    provider.verify_account_callback({"x-webhook-secret": "acct"}, b"{}")
    with pytest.raises(Unauthorized):
        _provider(lambda r: httpx.Response(200)).verify_account_callback(
            {"x-webhook-secret": "acct"}, b"{}"
        )


async def test_poll_posts_fetch() -> None:
    """poll() posts {task_id} to /fetch and parses the answer like a callback."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/fetch"
        assert json.loads(request.content) == {"task_id": "t"}
        return httpx.Response(200, json={"task_id": "t", "image_url": "https://i"})

    update = await _provider(handler).poll("t")
    assert update.state is UpdateState.COMPLETED
