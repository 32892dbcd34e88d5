"""Kie.ai adapter: documented payloads and looseness, submit building, body-code errors, HMAC.

Fixtures are copied from docs.kie.ai (tests/fixtures/kie). The docs show no failure
callback, no upscale-specific callback and no in-progress or failed ``record-info``: those
bodies are synthesised here from PROVIDERS.md §3 (``code`` 500 + ``msg``; ``successFlag``
0/2/3 with ``errorCode``/``errorMessage``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from handlers.providers import PROVIDERS
from handlers.providers.base import ProviderConfig, SubmitSpec
from handlers.providers.kie import KieProvider, parse_callback, parse_record_info
from receiver.errors import (
    BadRequest,
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
from receiver.settings import load_settings
from tests.conftest import load_fixture

NOW = 1_732_380_000
HMAC_KEY = "kie-hmac-key-for-tests"
PARENT = "2584469c38e43c173dcae9e60663f645"


def _provider(handler: Any = None, **options: Any) -> KieProvider:
    transport = httpx.MockTransport(handler or (lambda request: httpx.Response(500)))
    config = ProviderConfig(
        name="kie", api_key="kie-key", base_url="https://kie.test", options=options
    )
    return KieProvider(config, httpx.AsyncClient(transport=transport), now=lambda: NOW)


def _signature(key: str, task_id: str, timestamp: str) -> str:
    """Computed here from the docs' formula, independently of the adapter."""
    mac = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _signed(
    task_id: str = "mj_task_12345", *, at: int = NOW, key: str = HMAC_KEY
) -> dict[str, str]:
    stamp = str(at)
    return {"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": _signature(key, task_id, stamp)}


def _spec(
    action: str = "U1", callback_url: str | None = "https://relay.test/cb/kie/t"
) -> SubmitSpec:
    return SubmitSpec(
        job_id="job_1",
        parent_id=PARENT,
        action=action,
        callback_url=callback_url,
        callback_secret=None,
    )


# --- parsing -------------------------------------------------------------------------


def test_documented_success_callback_is_completed() -> None:
    """The docs' callback: code 200 with resultUrls as plain strings; no correlation field."""
    update = parse_callback(load_fixture("kie", "callback_success"))
    assert update.state is UpdateState.COMPLETED
    assert update.provider_task_id == "mj_task_12345"
    assert update.image_url == "https://example.com/mj_result1.png"
    assert len(update.image_urls) == 4
    assert update.correlation_id is None
    assert update.parent_id is None  # promptJson of an imagine names no parent task


def test_documented_record_info_reads_result_url_objects() -> None:
    """The docs' record-info: successFlag 1 and resultUrls as [{resultUrl}] objects."""
    update = parse_record_info(load_fixture("kie", "poll_record_info"))
    assert update.state is UpdateState.COMPLETED
    assert update.provider_task_id == "4edb3c5XXXXX75e3f0aa5cc"
    assert update.image_urls == tuple(
        f"https://tempfile.aiquickdraw.com/v/42ea4a4250571eb18361bd2e309c8e8a_0_{n}.jpeg"
        for n in range(4)
    )
    assert update.image_url == update.image_urls[0]


def test_upscale_callback_names_the_parent_from_prompt_json() -> None:
    """Synthesised upscale callback (PROVIDERS.md §3 [I]): promptJson carries the parent."""
    body = {
        "code": 200,
        "msg": "success",
        "data": {
            "taskId": "mj_upscale_abcdef123456",
            "promptJson": json.dumps({"taskId": PARENT, "imageIndex": 0}),
            "resultUrls": ["https://tempfile.aiquickdraw.com/v/x_0_0.jpeg"],
        },
    }
    update = parse_callback(body)
    assert update.state is UpdateState.COMPLETED
    assert update.parent_id == PARENT
    assert update.image_urls == ("https://tempfile.aiquickdraw.com/v/x_0_0.jpeg",)


def test_failure_callback_is_failed_with_msg() -> None:
    """Synthesised failure callback (PROVIDERS.md §3 [I]): any code but 200 is a failure."""
    body = {
        "code": 500,
        "msg": "Image generation failed",
        "data": {"taskId": "mj_upscale_abcdef123456", "promptJson": "{}", "resultUrls": []},
    }
    update = parse_callback(body)
    assert update.state is UpdateState.FAILED
    assert update.error_code is ErrorCode.FAILED
    assert update.error_message == "Image generation failed"
    moderated = parse_callback({**body, "msg": "Sensitive content detected"})
    assert moderated.error_code is ErrorCode.MODERATED
    no_msg = parse_callback({"code": 501, "data": {"taskId": "t"}})
    assert no_msg.error_message == "kie reported code 501"


def test_callback_accepts_the_poll_url_shape_and_poll_accepts_strings() -> None:
    """resultUrls as strings (callback) or [{resultUrl}] (poll) are read in both places."""
    callback = parse_callback(
        {"code": 200, "data": {"taskId": "t", "resultUrls": [{"resultUrl": "https://a"}]}}
    )
    assert callback.image_urls == ("https://a",)
    poll = parse_record_info(
        {
            "code": 200,
            "data": {
                "taskId": "t",
                "successFlag": 1,
                "resultInfoJson": {"resultUrls": ["https://b"]},
            },
        }
    )
    assert poll.image_urls == ("https://b",)


def test_result_info_json_may_be_a_json_string() -> None:
    """resultInfoJson given as a JSON string, like its *Json siblings, is decoded."""
    update = parse_record_info(
        {
            "data": {
                "taskId": "t",
                "successFlag": 1,
                "resultInfoJson": json.dumps({"resultUrls": [{"resultUrl": "https://c"}]}),
            }
        }
    )
    assert update.image_url == "https://c"


@pytest.mark.parametrize(
    ("flag", "state"),
    [
        (0, UpdateState.PROGRESS),
        (1, UpdateState.COMPLETED),
        (2, UpdateState.FAILED),
        (3, UpdateState.FAILED),
    ],
)
def test_success_flag_values(flag: int, state: UpdateState) -> None:
    """successFlag 0 → running, 1 → completed, 2 and 3 → failed (synthesised bodies)."""
    data: dict[str, Any] = {"taskId": "t", "successFlag": flag, "paramJson": '{"taskId": "p"}'}
    if flag == 1:
        data["resultInfoJson"] = {"resultUrls": [{"resultUrl": "https://r"}]}
    update = parse_record_info({"code": 200, "msg": "success", "data": data})
    assert update.state is state
    assert update.provider_task_id == "t"
    assert update.parent_id == "p"


def test_failed_record_info_messages() -> None:
    """errorMessage is the failure text (moderation wording → moderated); without it the
    errorCode or the flag's meaning is."""
    moderated = parse_record_info(
        {
            "data": {
                "taskId": "t",
                "successFlag": 2,
                "errorCode": 400,
                "errorMessage": "Banned prompt: content moderation",
            }
        }
    )
    assert moderated.error_code is ErrorCode.MODERATED
    assert moderated.error_message == "Banned prompt: content moderation"
    coded = parse_record_info({"data": {"taskId": "t", "successFlag": 2, "errorCode": 500}})
    assert coded.error_message == "kie reported error code 500"
    assert coded.error_code is ErrorCode.FAILED
    created = parse_record_info({"data": {"taskId": "t", "successFlag": 3}})
    assert created.error_message == "kie created the task but generation failed"
    plain = parse_record_info({"data": {"taskId": "t", "successFlag": 2}})
    assert plain.error_message == "kie reported the task failed"


def test_callback_task_id_fallbacks() -> None:
    """data.taskId, else data.task_id (the HMAC doc's spelling), else top-level taskId."""
    snake = parse_callback({"code": 500, "msg": "x", "data": {"task_id": "snake"}})
    assert snake.provider_task_id == "snake"
    top = parse_callback({"code": 500, "msg": "x", "taskId": "top"})
    assert top.provider_task_id == "top"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "body"),
        ({"code": 200, "data": "x"}, "data"),
        ({"code": 200, "data": {}}, "data.taskId"),
        ({"data": {"taskId": "t"}}, "code"),
        ({"code": "200", "data": {"taskId": "t"}}, "code"),
        ({"code": True, "data": {"taskId": "t"}}, "code"),
        ({"code": 200, "data": {"taskId": "t"}}, "data.resultUrls"),
        ({"code": 200, "data": {"taskId": "t", "resultUrls": []}}, "data.resultUrls"),
        ({"code": 200, "data": {"taskId": "t", "resultUrls": "https://a"}}, "data.resultUrls"),
        ({"code": 200, "data": {"taskId": "t", "resultUrls": [3]}}, "data.resultUrls[0]"),
        (
            {"code": 200, "data": {"taskId": "t", "resultUrls": [{"url": "x"}]}},
            "data.resultUrls[0]",
        ),
    ],
)
def test_unreadable_callbacks_name_the_field(payload: Any, field: str) -> None:
    """An unreadable callback is a PayloadError naming the field."""
    with pytest.raises(PayloadError) as caught:
        parse_callback(payload)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (None, "data"),
        ({}, "data.taskId"),
        ({"taskId": "t"}, "data.successFlag"),
        ({"taskId": "t", "successFlag": 4}, "data.successFlag"),
        ({"taskId": "t", "successFlag": "1"}, "data.successFlag"),
        ({"taskId": "t", "successFlag": True}, "data.successFlag"),
        ({"taskId": "t", "successFlag": 1}, "data.resultInfoJson"),
        ({"taskId": "t", "successFlag": 1, "resultInfoJson": "{"}, "data.resultInfoJson"),
        (
            {"taskId": "t", "successFlag": 1, "resultInfoJson": {"resultUrls": []}},
            "data.resultInfoJson.resultUrls",
        ),
        (
            {
                "taskId": "t",
                "successFlag": 1,
                "resultInfoJson": {"resultUrls": [{"resultUrl": ""}]},
            },
            "data.resultInfoJson.resultUrls[0]",
        ),
    ],
)
def test_unreadable_record_info_names_the_field(data: Any, field: str) -> None:
    """An unreadable record-info answer is a PayloadError naming the field."""
    with pytest.raises(PayloadError) as caught:
        parse_record_info({"code": 200, "msg": "success", "data": data})
    assert caught.value.field == field


# --- submit --------------------------------------------------------------------------


async def test_submit_builds_the_documented_request() -> None:
    """U1 with water_mark and a callback URL is the docs' example body, Bearer-authorised,
    and the docs' answer yields its data.taskId."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=load_fixture("kie", "submit_response"))

    expected = load_fixture("kie", "submit_request")
    provider = _provider(handler, water_mark="watermark")
    result = await provider.submit(_spec("U1", expected["callBackUrl"]))
    assert result.provider_task_id == "mj_upscale_abcdef123456"
    assert not result.existing
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://kie.test/api/v1/mj/generateUpscale"
    assert request.headers["authorization"] == "Bearer kie-key"
    assert json.loads(request.content) == expected


@pytest.mark.parametrize(("action", "index"), [("U1", 0), ("U2", 1), ("U3", 2), ("U4", 3)])
async def test_image_index_is_zero_based(action: str, index: int) -> None:
    """U1-U4 map to imageIndex 0-3; waterMark defaults to "" and no callBackUrl is sent
    when there is none."""
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"code": 200, "msg": "success", "data": {"taskId": "x"}})

    await _provider(handler).submit(_spec(action, None))
    assert bodies == [{"taskId": PARENT, "imageIndex": index, "waterMark": ""}]


async def test_only_u1_to_u4_are_supported() -> None:
    """Kie has no HD upscales: they are UnsupportedAction before any request."""
    provider = _provider()
    assert provider.supported_actions() == ("U1", "U2", "U3", "U4")
    with pytest.raises(UnsupportedAction) as caught:
        await provider.submit(_spec("upscale_subtle"))
    assert caught.value.context["supported"] == ["U1", "U2", "U3", "U4"]


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (400, ProviderRejected),
        (401, ProviderAuthFailed),
        (402, ProviderInsufficientCredits),
        (404, ProviderRejected),
        (422, ProviderRejected),
        (429, ProviderRateLimited),
        (455, ProviderUnavailable),
        (500, ProviderUnavailable),
        (501, ProviderRejected),
        (505, ProviderRejected),
    ],
)
async def test_body_codes_inside_http_200_are_errors(
    code: int, error_type: type[ProviderError]
) -> None:
    """Kie's error code inside an HTTP 200 envelope decides the error type."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": code, "msg": f"kie says {code}", "data": None})

    with pytest.raises(ProviderError) as caught:
        await _provider(handler).submit(_spec())
    assert type(caught.value) is error_type
    assert caught.value.status == code
    assert f"kie says {code}" in caught.value.message


async def test_body_code_wins_over_http_status_and_plain_http_errors_map() -> None:
    """A body code decides even on an HTTP error; without one the HTTP status does."""

    def coded(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"code": 402, "msg": "no credits", "data": None})

    with pytest.raises(ProviderInsufficientCredits):
        await _provider(coded).submit(_spec())

    def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="upstream down")

    with pytest.raises(ProviderUnavailable) as caught:
        await _provider(plain).submit(_spec())
    assert caught.value.status == 503


async def test_success_without_task_id_or_unreachable_is_unavailable() -> None:
    """An accepted submit without data.taskId, or no answer at all, is ProviderUnavailable."""

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 200, "msg": "success", "data": None})

    with pytest.raises(ProviderUnavailable, match=r"data\.taskId"):
        await _provider(empty).submit(_spec())

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ProviderUnavailable):
        await _provider(down).submit(_spec())


async def test_poll_reads_record_info() -> None:
    """poll GETs record-info?taskId= with the Bearer key and parses the answer."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=load_fixture("kie", "poll_record_info"))

    update = await _provider(handler).poll("4edb3c5XXXXX75e3f0aa5cc")
    assert update.state is UpdateState.COMPLETED
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/api/v1/mj/record-info"
    assert request.url.params["taskId"] == "4edb3c5XXXXX75e3f0aa5cc"
    assert request.headers["authorization"] == "Bearer kie-key"


@pytest.mark.parametrize(
    ("code", "error_type"), [(404, ProviderRejected), (500, ProviderUnavailable)]
)
async def test_poll_with_non_200_body_code_is_a_provider_error(
    code: int, error_type: type[ProviderError]
) -> None:
    """A record-info answer whose body code is not 200 is a ProviderError, not a result."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": code, "msg": "nope", "data": None})

    with pytest.raises(error_type):
        await _provider(handler).poll("t")


# --- HMAC ----------------------------------------------------------------------------

CALLBACK = json.dumps(load_fixture("kie", "callback_success")).encode()


def test_valid_signature_is_accepted() -> None:
    """A signature computed from the docs' formula passes, for job and account callbacks."""
    provider = _provider(webhook_hmac_key=HMAC_KEY)
    provider.verify_callback(_signed(), CALLBACK, None)
    provider.verify_account_callback(_signed(), CALLBACK)
    lower = {k.lower(): v for k, v in _signed().items()}
    provider.verify_callback(lower, CALLBACK, None)


@pytest.mark.parametrize("skew", [-300, 300])
def test_window_edges_are_inside(skew: int) -> None:
    """Timestamps exactly 300 s away either way are still accepted."""
    _provider(webhook_hmac_key=HMAC_KEY).verify_callback(_signed(at=NOW + skew), CALLBACK, None)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(_signed(key="another-key"), id="wrong-key"),
        pytest.param(_signed("some_other_task"), id="other-task"),
        pytest.param({**_signed(), "X-Webhook-Signature": "AAAA"}, id="garbage"),
        pytest.param(_signed(at=NOW - 301), id="stale-past"),
        pytest.param(_signed(at=NOW + 301), id="stale-future"),
        pytest.param({"X-Webhook-Signature": _signed()["X-Webhook-Signature"]}, id="no-timestamp"),
        pytest.param({"X-Webhook-Timestamp": str(NOW)}, id="no-signature"),
        pytest.param({}, id="no-headers"),
        pytest.param({**_signed(), "X-Webhook-Timestamp": "1732380000.5"}, id="float-timestamp"),
        pytest.param({**_signed(), "X-Webhook-Timestamp": "soon"}, id="text-timestamp"),
    ],
)
def test_bad_signatures_are_unauthorized(headers: dict[str, str]) -> None:
    """Wrong, stale (past or future), missing or malformed signatures are Unauthorized,
    and the message never echoes the key or the signature."""
    provider = _provider(webhook_hmac_key=HMAC_KEY)
    with pytest.raises(Unauthorized) as caught:
        provider.verify_callback(headers, CALLBACK, None)
    assert HMAC_KEY not in caught.value.message
    signature = headers.get("X-Webhook-Signature")
    assert not signature or signature not in caught.value.message
    with pytest.raises(Unauthorized):
        provider.verify_account_callback(headers, CALLBACK)


def test_non_json_body_is_bad_request() -> None:
    """With the HMAC key set, the task id must come from the body: non-JSON is a 400."""
    with pytest.raises(BadRequest) as caught:
        _provider(webhook_hmac_key=HMAC_KEY).verify_callback(_signed(), b"<html>", None)
    assert caught.value.http_status == 400
    assert not isinstance(caught.value, Unauthorized)


def test_signature_uses_the_task_id_fallbacks() -> None:
    """The signed task id is read like the parser reads it (data.task_id here)."""
    body = json.dumps({"code": 200, "data": {"task_id": "snake_id"}}).encode()
    _provider(webhook_hmac_key=HMAC_KEY).verify_callback(_signed("snake_id"), body, None)


def test_rotation_list_accepts_either_key() -> None:
    """A list of keys (while rotating) accepts a signature from any of them."""
    provider = _provider(webhook_hmac_key=["new-key", HMAC_KEY])
    provider.verify_callback(_signed(key=HMAC_KEY), CALLBACK, None)
    provider.verify_callback(_signed(key="new-key"), CALLBACK, None)
    with pytest.raises(Unauthorized):
        provider.verify_callback(_signed(key="old-key"), CALLBACK, None)


def test_without_a_key_only_job_callbacks_pass() -> None:
    """Without webhook_hmac_key the signed URL is the check; account callbacks are refused."""
    provider = _provider()
    provider.verify_callback({}, b"not even json", None)
    with pytest.raises(Unauthorized, match="webhook_hmac_key"):
        provider.verify_account_callback(_signed(), CALLBACK)
    with pytest.raises(Unauthorized):
        _provider(webhook_hmac_key=42).verify_callback(_signed(), CALLBACK, None)


def test_registry_and_settings_defaults() -> None:
    """kie is registered, confirms by polling by default and keeps webhook_hmac_key and
    water_mark as provider options."""
    assert PROVIDERS["kie"] is KieProvider
    assert KieProvider.callback_mode is CallbackMode.WEBHOOK
    settings = load_settings(
        {"RELAY_SECRET_KEY": "k", "RELAY_API_TOKEN": "t"},
        config_text='[providers.kie]\napi_key = "x"\nwebhook_hmac_key = "h"\nwater_mark = "w"\n',
    )
    config = settings.providers["kie"]
    assert config.base_url == "https://api.kie.ai"
    assert config.confirm_by_poll is True
    assert config.options == {"webhook_hmac_key": "h", "water_mark": "w"}


def test_body_code_as_digits_is_an_error_code() -> None:
    """A body code sent as the string "402" counts like the number 402."""
    from handlers.providers.base import body_error_code

    assert body_error_code({"code": "402"}) == 402
    assert body_error_code({"code": 402}) == 402
    assert body_error_code({"code": "200"}) is None
    assert body_error_code({"code": "x"}) is None
