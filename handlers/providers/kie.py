"""Kie.ai (api.kie.ai, the Midjourney API).

Submit: ``POST /api/v1/mj/generateUpscale`` with ``taskId`` (the parent), ``imageIndex``
0-3 (U1-U4 only: Kie has no HD upscales), ``waterMark`` and ``callBackUrl``; Bearer key.
Errors come in the ``{code, msg, data}`` envelope, possibly inside an HTTP 200: the body's
``code`` decides. Kie posts one terminal callback per task (no progress posts) and
retries it after 1, 5 and 15 min. Poll: ``GET /api/v1/mj/record-info?taskId=``.

Authenticity: with the account's ``webhook_hmac_key`` configured, a callback must carry
``X-Webhook-Timestamp`` (unix seconds, within ±300 s) and ``X-Webhook-Signature`` =
base64 HMAC-SHA256(key, ``taskId + "." + timestamp``). The signature does not cover the
body, so Kie confirms by polling by default: the relay emits what ``record-info`` says.

Looseness handled: callback ``resultUrls`` are strings while the poll's are
``{resultUrl}`` objects (both shapes are read in both places); ``successFlag`` 0/1/2/3;
a non-200 ``code`` inside an HTTP 200; the task id may sit at ``data.taskId``,
``data.task_id`` or a top-level ``taskId``; ``resultInfoJson`` may be an object or, like
its ``*Json`` siblings, a JSON string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from handlers.providers.actions import GRID_ACTIONS, grid_index
from handlers.providers.base import (
    ProviderConfig,
    SubmitResult,
    SubmitSpec,
    body_error_code,
    failure_code,
    json_or_empty,
    optional_str,
    raise_for_status,
    request_json,
    require_object,
    require_str,
)
from receiver.errors import (
    PayloadError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    Unauthorized,
    UnsupportedAction,
)
from receiver.events import CallbackMode, ProviderUpdate, UpdateState
from receiver.jsonbody import decode_json, decode_nested

if TYPE_CHECKING:
    import httpx  # a provider gets the client; importing it costs a cold start

TIMESTAMP_HEADER = "x-webhook-timestamp"
SIGNATURE_HEADER = "x-webhook-signature"
HMAC_WINDOW_S = 300
_TIMESTAMP = re.compile(r"\d{1,12}")

#: Kie's own body codes, which the generic HTTP mapping would misread
_KIE_CODES: dict[int, tuple[type[ProviderError], str]] = {
    455: (ProviderUnavailable, "kie is under maintenance"),
    501: (ProviderRejected, "kie could not generate the upscale"),
    505: (ProviderRejected, "kie has this feature disabled"),
}


class KieProvider:
    """Drives Kie.ai's Midjourney upscale (U1-U4) and checks its optional HMAC."""

    name: ClassVar[str] = "kie"
    default_base_url: ClassVar[str] = "https://api.kie.ai"
    callback_mode: ClassVar[CallbackMode] = CallbackMode.WEBHOOK
    mints_job_secret: ClassVar[bool] = False
    confirm_by_poll_default: ClassVar[bool] = True
    max_jobs_default: ClassVar[int | None] = None
    options_keys: ClassVar[frozenset[str]] = frozenset({"webhook_hmac_key", "water_mark"})

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        key = options.get("webhook_hmac_key")
        keys = [key] if isinstance(key, str) else key if isinstance(key, list) else None
        if key is not None and (keys is None or not all(isinstance(k, str) for k in keys)):
            problems.append("webhook_hmac_key must be a string or a list of strings")
        elif keys is not None and (not keys or not all(keys)):
            problems.append(
                "webhook_hmac_key is empty: set Kie's webhookHmacKey, or remove the key "
                "to run without HMAC checks"
            )
        if "water_mark" in options and not isinstance(options["water_mark"], str):
            problems.append("water_mark must be a string")
        return problems

    def __init__(
        self,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._client = client
        #: the clock the timestamp window is checked against (unix seconds)
        self.now = now

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"}

    def supported_actions(self) -> tuple[str, ...]:
        return GRID_ACTIONS

    async def submit(self, spec: SubmitSpec) -> SubmitResult:
        if spec.action not in GRID_ACTIONS:
            raise UnsupportedAction(self.name, spec.action, list(self.supported_actions()))
        body: dict[str, Any] = {
            "taskId": spec.parent_id,
            "imageIndex": grid_index(spec.action) - 1,
            "waterMark": str(self.config.options.get("water_mark") or ""),
        }
        if spec.callback_url:
            body["callBackUrl"] = spec.callback_url
        envelope = await request_json(
            self._client,
            "POST",
            self.config.base_url + "/api/v1/mj/generateUpscale",
            provider=self.name,
            headers=self._headers(),
            json=body,
            check=_raise_for_code,
        )
        data = envelope.get("data")
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise ProviderUnavailable(
                "kie accepted the upscale but sent no data.taskId", provider=self.name
            )
        return SubmitResult(provider_task_id=task_id)

    async def poll(self, task_id: str) -> ProviderUpdate:
        envelope = await request_json(
            self._client,
            "GET",
            self.config.base_url + "/api/v1/mj/record-info",
            provider=self.name,
            headers=self._headers(),
            params={"taskId": task_id},
            check=_raise_for_code,
        )
        return parse_record_info(envelope)

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, job_secret: str | None
    ) -> None:
        keys = self._hmac_keys()
        if keys:
            self._check_signature(headers, body, keys)

    def verify_account_callback(self, headers: Mapping[str, str], body: bytes) -> None:
        keys = self._hmac_keys()
        if not keys:
            raise Unauthorized("kie account callbacks need kie.webhook_hmac_key")
        self._check_signature(headers, body, keys)

    def parse_callback(self, payload: Any) -> ProviderUpdate:
        return parse_callback(payload)

    def _hmac_keys(self) -> tuple[str, ...]:
        """The configured HMAC key(s): one string, or a list while rotating."""
        value = self.config.options.get("webhook_hmac_key")
        if isinstance(value, str):
            return (value,) if value else ()
        if isinstance(value, list) and all(isinstance(k, str) for k in value):
            return tuple(k for k in value if k)
        if value is None:
            return ()
        raise Unauthorized("kie.webhook_hmac_key must be a string or a list of strings")

    def _check_signature(
        self, headers: Mapping[str, str], body: bytes, keys: tuple[str, ...]
    ) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        timestamp = lowered.get(TIMESTAMP_HEADER, "").strip()
        signature = lowered.get(SIGNATURE_HEADER, "").strip()
        if not timestamp:
            raise Unauthorized("missing X-Webhook-Timestamp header")
        if not signature:
            raise Unauthorized("missing X-Webhook-Signature header")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise Unauthorized("X-Webhook-Timestamp must be integer unix seconds")
        if abs(self.now() - int(timestamp)) > HMAC_WINDOW_S:
            raise Unauthorized(f"X-Webhook-Timestamp is outside the ±{HMAC_WINDOW_S} s window")
        payload = decode_json(body)
        message = f"{callback_task_id(require_object(payload))}.{timestamp}".encode()
        given = signature.encode()
        if not any(hmac.compare_digest(given, _sign(key, message)) for key in keys):
            raise Unauthorized("wrong X-Webhook-Signature")


def _sign(key: str, message: bytes) -> bytes:
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest())


def _raise_for_code(response: httpx.Response) -> None:
    """Kie's body ``code`` decides before the HTTP status: a code outside 2xx is an
    error even inside an HTTP 200, and Kie's own codes are mapped as Kie means them."""
    body = json_or_empty(response)
    code = body_error_code(body)
    if code is None:
        return
    msg = body.get("msg")
    text = msg if isinstance(msg, str) and msg else f"code {code}"
    if code in _KIE_CODES:
        error_type, what = _KIE_CODES[code]
        raise error_type(f"{what}: {text}"[:300], provider="kie", status=code)
    raise_for_status(response, "kie", status=code, message=text)


def callback_task_id(body: Mapping[str, Any]) -> str:
    """The task id a callback is about: ``data.taskId``, else ``data.task_id`` (the HMAC
    doc's spelling), else a top-level ``taskId``."""
    data = body.get("data")
    if isinstance(data, dict):
        found = optional_str(data, "taskId", "task_id")
        if found:
            return found
    found = optional_str(body, "taskId")
    if found:
        return found
    raise PayloadError("data.taskId")


def parse_callback(payload: Any) -> ProviderUpdate:
    """Normalise a callback body: ``code`` 200 → completed, any other → failed."""
    body = require_object(payload)
    data = body.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise PayloadError("data", "must be a JSON object")
    task_id = callback_task_id(body)
    code = body.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 999:
        raise PayloadError("code", "must be an integer status code")
    parent_id = _parent_id(data.get("promptJson"), "data.promptJson")
    if code == 200:
        urls = result_urls(data.get("resultUrls"), "data.resultUrls")
        return _completed(task_id, urls, parent_id)
    message = optional_str(body, "msg") or f"kie reported code {code}"
    return _failed(task_id, message, parent_id)


def parse_record_info(payload: Any) -> ProviderUpdate:
    """Normalise a ``record-info`` answer whose ``code`` the caller has checked:
    ``successFlag`` 0 → running, 1 → completed, 2 or 3 → failed."""
    data = require_object(require_object(payload).get("data"), "data")
    task_id = require_str(data, "taskId", path="data.taskId")
    flag = data.get("successFlag")
    if not isinstance(flag, int) or isinstance(flag, bool) or flag not in (0, 1, 2, 3):
        raise PayloadError("data.successFlag", "must be 0, 1, 2 or 3")
    parent_id = _parent_id(data.get("paramJson"), "data.paramJson")
    if flag == 0:
        return ProviderUpdate(
            provider_task_id=task_id, state=UpdateState.PROGRESS, parent_id=parent_id
        )
    if flag == 1:
        info = data.get("resultInfoJson")
        if isinstance(info, str):
            info = decode_nested(info, "data.resultInfoJson")
        info = require_object(info, "data.resultInfoJson")
        urls = result_urls(info.get("resultUrls"), "data.resultInfoJson.resultUrls")
        return _completed(task_id, urls, parent_id)
    error_code = _short_code(data.get("errorCode"))
    message = optional_str(data, "errorMessage") or (
        f"kie reported error code {error_code}"
        if error_code is not None
        else "kie created the task but generation failed"
        if flag == 3
        else "kie reported the task failed"
    )
    return _failed(task_id, message, parent_id)


def _completed(task_id: str, urls: tuple[str, ...], parent_id: str | None) -> ProviderUpdate:
    return ProviderUpdate(
        provider_task_id=task_id,
        state=UpdateState.COMPLETED,
        progress=100,
        image_url=urls[0],
        image_urls=urls,
        parent_id=parent_id,
    )


def _failed(task_id: str, message: str, parent_id: str | None) -> ProviderUpdate:
    return ProviderUpdate(
        provider_task_id=task_id,
        state=UpdateState.FAILED,
        error_code=failure_code(message),
        error_message=message,
        parent_id=parent_id,
    )


def result_urls(value: Any, field_name: str) -> tuple[str, ...]:
    """A non-empty list of URLs given as strings or ``{"resultUrl": ...}`` objects."""
    if not isinstance(value, list) or not value:
        raise PayloadError(field_name, "must be a non-empty list of result URLs")
    urls: list[str] = []
    for index, item in enumerate(value):
        url = item.get("resultUrl") if isinstance(item, dict) else item
        if not isinstance(url, str) or not url:
            raise PayloadError(f"{field_name}[{index}]", "must be a URL or {resultUrl}")
        urls.append(url)
    return tuple(urls)


def _parent_id(params: Any, field_name: str) -> str | None:
    """The parent ``taskId`` out of ``promptJson``/``paramJson`` (a JSON string of the
    request), when it is there. This is context only, so text that is not JSON is None;
    a hostile shape (too large, nested too deeply) is still a ``PayloadError``."""
    if not isinstance(params, str):
        return None
    decoded = decode_nested(params, field_name, lenient=True)
    return optional_str(decoded, "taskId") if isinstance(decoded, dict) else None


def _short_code(value: Any) -> str | int | None:
    """Kie's ``errorCode`` when it is a short string or a sane integer, for the
    failure message; anything else is dropped."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**12:
        return value
    if isinstance(value, str) and 0 < len(value) <= 64:
        return value
    return None
