"""useapi.net adapter: request building, documented error answers, payload parsing."""

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
from handlers.providers.useapi import UseapiProvider, parse_job
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
from receiver.events import ErrorCode, UpdateState
from tests.conftest import load_fixture

BASE = "https://useapi.test"
KEY = "user:1234-secret"
CALLBACK = "https://relay.test/callbacks/useapi/tok"


def _provider(
    handler: Callable[[httpx.Request], httpx.Response], max_jobs: int | None = None
) -> tuple[UseapiProvider, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    config = ProviderConfig(name="useapi", api_key=KEY, base_url=BASE, max_jobs=max_jobs)
    return UseapiProvider(config, client), client


def _spec(action: str = "U1", callback: str | None = CALLBACK) -> SubmitSpec:
    return SubmitSpec(
        job_id="job_abc",
        parent_id="parent-job",
        action=action,
        callback_url=callback,
        callback_secret=None,
    )


async def _submit(status: int, body: Any, headers: dict[str, str] | None = None) -> SubmitResult:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    provider, client = _provider(handler)
    async with client:
        return await provider.submit(_spec())


def _error_fixture(key: str) -> dict[str, Any]:
    errors: dict[str, dict[str, Any]] = load_fixture("useapi", "errors")
    return copy.deepcopy(errors[key])


def test_registry_and_defaults() -> None:
    """The registry names the useapi adapter; it caps concurrent jobs at 3 by default."""
    assert PROVIDERS["useapi"] is UseapiProvider
    assert UseapiProvider.default_base_url == "https://api.useapi.net"
    assert UseapiProvider.max_jobs_default == 3


def test_every_action_is_supported() -> None:
    """useapi's enum holds every upscale button, redo subtle/creative included."""
    provider, _client = _provider(lambda request: httpx.Response(500))
    assert provider.supported_actions() == ALL_ACTIONS


@pytest.mark.parametrize("action", ALL_ACTIONS)
async def test_submit_builds_the_documented_request(action: str) -> None:
    """Each action posts jobid, the exact label, our job id as replyRef, the callback URL
    as replyUrl and maxJobs, with a Bearer key; the answer's jobid is the task."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=load_fixture("useapi", "submit_response"))

    provider, client = _provider(handler)
    async with client:
        result = await provider.submit(_spec(action))
    assert result == SubmitResult(provider_task_id="<jobid>", existing=False)
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/v2/jobs/button"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert body == {
        "jobid": "parent-job",
        "button": LABELS[action],
        "replyUrl": CALLBACK,
        "replyRef": "job_abc",
        "maxJobs": 3,
    }
    assert set(body) <= set(load_fixture("useapi", "submit_request"))


async def test_submit_sends_the_configured_max_jobs_and_no_reply_url_without_callback() -> None:
    """``max_jobs`` from the config becomes maxJobs; no callback URL, no replyUrl."""
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"jobid": "j1", "status": "started", "code": 200})

    provider, client = _provider(handler, max_jobs=15)
    async with client:
        await provider.submit(_spec("upscale_4x", callback=None))
    assert seen == [
        {"jobid": "parent-job", "button": "Upscale (4x)", "replyRef": "job_abc", "maxJobs": 15}
    ]


async def test_409_returns_the_job_that_already_ran_the_button() -> None:
    """The documented 409 ("Button U1 already executed by job <jobid>") is not an error:
    the job it names comes back as an existing task."""
    body = _error_fixture("409")
    body.update(error="Button U1 already executed by job job-first", button="U1", jobid="job-first")
    result = await _submit(409, body)
    assert result == SubmitResult(provider_task_id="job-first", existing=True)


async def test_409_verbatim_fixture_uses_its_jobid_field() -> None:
    """The verbatim 409 body's ``jobid`` field is the existing task."""
    result = await _submit(409, _error_fixture("409"))
    assert result == SubmitResult(provider_task_id="<jobid>", existing=True)


async def test_409_without_jobid_field_reads_the_error_text() -> None:
    """If the 409 body has no ``jobid``, the job named in its error text is used."""
    body = {"error": "Button U2 already executed by job abc-123", "code": 409}
    assert await _submit(409, body) == SubmitResult(provider_task_id="abc-123", existing=True)


async def test_409_naming_no_job_is_rejected() -> None:
    """A 409 that names no job cannot be followed: ProviderRejected."""
    with pytest.raises(ProviderRejected):
        await _submit(409, {"error": "Conflict", "code": 409})


@pytest.mark.parametrize(
    ("key", "error", "text"),
    [
        ("400", ProviderRejected, "not found in job"),
        ("401", ProviderAuthFailed, "Unauthorized"),
        ("402", ProviderInsufficientCredits, "no subscription"),
        ("404", ProviderRejected, "Unable to locate job"),
        ("422", ProviderRejected, "Our AI moderators"),
        ("429", ProviderRateLimited, "Maximum of"),
        ("429_discord", ProviderRateLimited, "Discord /interactions"),
        ("504", ProviderUnavailable, "Job queued"),
    ],
)
async def test_documented_error_bodies_map_to_provider_errors(
    key: str, error: type[ProviderError], text: str
) -> None:
    """Every documented useapi error body (verbatim) maps to our provider error codes."""
    body = _error_fixture(key)
    with pytest.raises(error, match=text) as caught:
        await _submit(body["code"], body)
    assert caught.value.provider == "useapi"
    assert caught.value.status == body["code"]


async def test_596_pending_moderation_is_unavailable() -> None:
    """596 (pending moderation message, documented as a job record) is ProviderUnavailable."""
    body = {"jobid": "j", "status": "failed", "error": "Pending mod message", "code": 596}
    with pytest.raises(ProviderUnavailable, match="Pending mod message"):
        await _submit(596, body)


async def test_422_message_comes_from_error_details() -> None:
    """The moderated 422's exception message carries useapi's errorDetails."""
    with pytest.raises(ProviderRejected) as caught:
        await _submit(422, _error_fixture("422"))
    assert "might be against our community standards" in caught.value.message


async def test_429_max_jobs_waits_10_to_30_seconds() -> None:
    """The maxJobs 429 (no Retry-After) asks for a wait within useapi's 10..30 s."""
    waits = set()
    for _ in range(40):
        with pytest.raises(ProviderRateLimited) as caught:
            await _submit(429, _error_fixture("429"))
        waits.add(caught.value.retry_after_s)
    assert all(10 <= wait <= 30 for wait in waits)
    assert len(waits) > 1, "the wait is jittered"


async def test_429_discord_uses_discords_retry_after() -> None:
    """Discord's 429 names ``retry_after: 10`` inside errorDetails: wait 10 s."""
    with pytest.raises(ProviderRateLimited) as caught:
        await _submit(429, _error_fixture("429_discord"))
    assert caught.value.retry_after_s == 10
    assert caught.value.headers() == {"Retry-After": "10"}


async def test_429_discord_retry_after_is_clamped_to_useapis_window() -> None:
    """A Discord retry_after outside 10..30 s is clamped to useapi's advice."""
    body = _error_fixture("429_discord")
    body["errorDetails"] = json.dumps({"retry_after": 0.5})
    with pytest.raises(ProviderRateLimited) as caught:
        await _submit(429, body)
    assert caught.value.retry_after_s == 10


async def test_429_honours_a_retry_after_header() -> None:
    """A Retry-After header, when useapi sends one, wins."""
    with pytest.raises(ProviderRateLimited) as caught:
        await _submit(429, _error_fixture("429"), headers={"Retry-After": "45"})
    assert caught.value.retry_after_s == 45


async def test_submit_without_jobid_is_unavailable() -> None:
    """A 200 with no jobid cannot be tracked: ProviderUnavailable."""
    with pytest.raises(ProviderUnavailable):
        await _submit(200, {"status": "started", "code": 200})


async def test_submit_never_echoes_the_api_key() -> None:
    """A refused key does not appear in the error raised."""
    with pytest.raises(ProviderAuthFailed) as caught:
        await _submit(401, _error_fixture("401"))
    assert KEY not in str(caught.value)
    assert KEY not in json.dumps(caught.value.body())


async def test_poll_gets_the_job_record() -> None:
    """Poll GETs /v2/jobs/?jobid=<id> with the Bearer key and parses the record."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=load_fixture("useapi", "synth_callback_completed"))

    provider, client = _provider(handler)
    async with client:
        update = await provider.poll("job 1/2")
    [request] = seen
    assert request.method == "GET"
    assert request.url.path == "/v2/jobs/"
    assert request.url.params["jobid"] == "job 1/2"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert update.state is UpdateState.COMPLETED


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, ProviderRejected), (429, ProviderRateLimited), (401, ProviderAuthFailed)],
)
async def test_poll_errors_map(status: int, error: type[ProviderError]) -> None:
    """Poll failures map like submit failures; a 429 asks for 10..30 s."""
    body = {"error": "x", "code": status}
    provider, client = _provider(lambda request: httpx.Response(status, json=body))
    async with client:
        with pytest.raises(error) as caught:
            await provider.poll("j")
    if isinstance(caught.value, ProviderRateLimited):
        assert 10 <= caught.value.retry_after_s <= 30


def test_callbacks_need_no_secret_and_account_callbacks_are_refused() -> None:
    """verify_callback accepts anything (the URL token is the check); account-level
    callbacks cannot be verified and are refused."""
    provider, _client = _provider(lambda request: httpx.Response(500))
    provider.verify_callback({}, b"{}", None)
    with pytest.raises(Unauthorized):
        provider.verify_account_callback({}, b"{}")


def test_completed_body_parses() -> None:
    """The completed job record (synthesised in PROVIDERS.md §4 from the official model;
    the docs show no example) is a completed update: attachments[].url is the image,
    replyRef the correlation id, parentJobId the parent."""
    provider, _client = _provider(lambda request: httpx.Response(500))
    update = provider.parse_callback(load_fixture("useapi", "synth_callback_completed"))
    assert update.provider_task_id == "<jobid>"
    assert update.state is UpdateState.COMPLETED
    assert update.progress == 100
    assert update.image_url == "https://cdn.discordapp.com/attachments/<c>/<m>/image.png"
    assert update.image_urls == (update.image_url,)
    assert update.correlation_id == "job-123"
    assert update.parent_id == "<parent jobid>"
    assert update.buttons[0] == "Upscale (Subtle)"
    assert "⬅️" in update.buttons


def test_failed_body_parses() -> None:
    """The generic failed body (synthesised in PROVIDERS.md §4) is a failed update."""
    update = parse_job(load_fixture("useapi", "synth_callback_failed"))
    assert update.state is UpdateState.FAILED
    assert update.error_code is ErrorCode.FAILED
    assert update.error_message == "Job timed out"
    assert update.correlation_id == "job-123"


def test_submit_response_fixture_parses_as_running() -> None:
    """The documented submit answer (a job record, status started) is a progress update
    with no percentage (its content has none) and the echoed replyRef."""
    update = parse_job(load_fixture("useapi", "submit_response"))
    assert update.state is UpdateState.PROGRESS
    assert update.progress is None
    assert update.correlation_id == "<your optional reference id>"
    assert update.parent_id == "<jobid>"


@pytest.mark.parametrize(
    ("status", "state", "code"),
    [
        ("created", UpdateState.PROGRESS, None),
        ("started", UpdateState.PROGRESS, None),
        ("progress", UpdateState.PROGRESS, None),
        ("completed", UpdateState.COMPLETED, None),
        ("failed", UpdateState.FAILED, ErrorCode.FAILED),
        ("moderated", UpdateState.FAILED, ErrorCode.MODERATED),
        ("cancelled", UpdateState.FAILED, ErrorCode.CANCELLED),
        ("Completed", UpdateState.COMPLETED, None),
    ],
)
def test_every_status_maps(status: str, state: UpdateState, code: ErrorCode | None) -> None:
    """Each documented status maps to its state and error code."""
    body = {**load_fixture("useapi", "synth_callback_completed"), "status": status}
    update = parse_job(body)
    assert update.state is state
    assert update.error_code is code


def test_moderated_message_joins_error_and_details() -> None:
    """A moderated job's message is ``error: errorDetails``."""
    body = {
        **load_fixture("useapi", "synth_callback_failed"),
        **{k: v for k, v in _error_fixture("422").items() if k in ("error", "errorDetails")},
        "status": "moderated",
    }
    update = parse_job(body)
    assert update.error_code is ErrorCode.MODERATED
    assert update.error_message == (
        "Action needed to continue: Sorry! Our AI moderators feel your prompt might be "
        "against our community standards."
    )


def test_failure_without_texts_gets_a_generic_message() -> None:
    """A cancelled job with no error text still carries a message."""
    body = {"jobid": "j", "status": "cancelled"}
    assert parse_job(body).error_message == "useapi reported the job cancelled"


@pytest.mark.parametrize(
    ("content", "progress"),
    [
        ("**a cat** - Upscaling image #1 with Subtle (42%) (fast)", 42),
        ("**a cat** - (0%) (relaxed)", 0),
        ("**a cat** - Waiting to start", None),
        ("", None),
    ],
)
def test_progress_is_read_from_content(content: str, progress: int | None) -> None:
    """The Discord ``content`` text's "(N%)" is the progress; none means unknown."""
    body = {"jobid": "j", "status": "progress", "content": content}
    assert parse_job(body).progress == progress


def test_every_attachment_url_is_kept() -> None:
    """All attachment URLs are image_urls; the first is the image."""
    body = load_fixture("useapi", "synth_callback_completed")
    body["attachments"].append({**body["attachments"][0], "url": "https://cdn.test/2.png"})
    update = parse_job(body)
    assert update.image_urls == (update.image_url, "https://cdn.test/2.png")


def _with(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(load_fixture("useapi", "synth_callback_completed"))
    for key, value in changes.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "body"),
        (_with(jobid=...), "jobid"),
        (_with(jobid=""), "jobid"),
        (_with(status=...), "status"),
        (_with(status=7), "status"),
        (_with(status="queued"), "status"),
        (_with(attachments=...), "attachments"),
        (_with(attachments=[]), "attachments"),
        (_with(attachments={"url": "x"}), "attachments"),
        (_with(attachments=["https://x"]), "attachments[0]"),
        (_with(attachments=[{"id": "1"}]), "attachments[0].url"),
        (_with(buttons="U1"), "buttons"),
        (_with(status="progress", content=42), "content"),
    ],
)
def test_unreadable_bodies_name_the_field(payload: Any, field: str) -> None:
    """Anything beyond the documented looseness is a PayloadError naming the field."""
    with pytest.raises(PayloadError) as caught:
        parse_job(payload)
    assert caught.value.field == field


async def test_unknown_action_is_refused_before_any_request() -> None:
    """An action outside our names raises UnsupportedAction and sends nothing."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"jobid": "j"})

    provider, client = _provider(handler)
    async with client:
        with pytest.raises(UnsupportedAction):
            await provider.submit(_spec("V1"))
    assert sent == []


async def test_429_with_unreadable_details_still_waits_10_to_30_seconds() -> None:
    """A 429 whose errorDetails is not JSON, or whose body is not JSON at all, falls
    back to a 10..30 s wait."""
    for content in (b'{"error": "busy", "errorDetails": "try later", "code": 429}', b"busy"):
        provider, client = _provider(lambda request, c=content: httpx.Response(429, content=c))
        async with client:
            with pytest.raises(ProviderRateLimited) as caught:
                await provider.submit(_spec())
        assert 10 <= caught.value.retry_after_s <= 30


async def test_non_json_server_error_is_unavailable() -> None:
    """A 503 with an HTML body is ProviderUnavailable."""
    provider, client = _provider(lambda request: httpx.Response(503, content=b"<html>"))
    async with client:
        with pytest.raises(ProviderUnavailable):
            await provider.submit(_spec())


def test_running_job_without_content_has_no_progress() -> None:
    """A created job with no ``content`` has an unknown percentage."""
    update = parse_job({"jobid": "j", "status": "created", "replyRef": "job_1"})
    assert update.state is UpdateState.PROGRESS
    assert update.progress is None
    assert update.correlation_id == "job_1"
