"""Apiframe (the legacy "Original" API at api.apiframe.pro).

Submit: ``POST /upscale-1x`` (U1-U4, ``index`` "1"-"4"), ``/upscale-alt`` (``type``
subtle/creative), ``/upscale-highres`` (``type`` 2x/4x); the raw API key in
``Authorization``. Callbacks go to ``webhook_url`` (progress posts, then the final
result) with our per-job ``webhook_secret`` echoed as ``x-webhook-secret``. Poll:
``POST /fetch {"task_id"}``, which answers with the callback's shape.

Looseness handled: final results may carry no ``status`` (an image means done);
``finished`` and ``completed`` both mean done; ``percentage`` is a string.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from handlers.providers.actions import GRID_ACTIONS, grid_index
from handlers.providers.base import (
    ProviderConfig,
    SubmitResult,
    SubmitSpec,
    failure_code,
    json_or_empty,
    optional_str,
    parse_progress,
    raise_for_status,
    request_json,
    require_object,
    require_str,
    string_list,
)
from receiver.errors import PayloadError, ProviderUnavailable, Unauthorized, UnsupportedAction
from receiver.events import CallbackMode, ProviderUpdate, UpdateState

if TYPE_CHECKING:
    import httpx  # a provider gets the client; importing it costs a cold start

SECRET_HEADER = "x-webhook-secret"  # noqa: S105 (a header name)

#: our action -> (endpoint, extra body fields)
_ENDPOINTS: dict[str, tuple[str, dict[str, str]]] = {
    **{action: ("/upscale-1x", {"index": str(grid_index(action))}) for action in GRID_ACTIONS},
    "upscale_subtle": ("/upscale-alt", {"type": "subtle"}),
    "upscale_creative": ("/upscale-alt", {"type": "creative"}),
    "upscale_2x": ("/upscale-highres", {"type": "2x"}),
    "upscale_4x": ("/upscale-highres", {"type": "4x"}),
}

_DONE = {"finished", "completed", "done", "success"}
_FAILED = {"failed", "error"}

MIN_ACCOUNT_SECRET_CHARS = 16


class ApiframeProvider:
    """Drives Apiframe's legacy upscale endpoints."""

    name: ClassVar[str] = "apiframe"
    default_base_url: ClassVar[str] = "https://api.apiframe.pro"
    callback_mode: ClassVar[CallbackMode] = CallbackMode.WEBHOOK
    mints_job_secret: ClassVar[bool] = True
    confirm_by_poll_default: ClassVar[bool] = False
    max_jobs_default: ClassVar[int | None] = None
    options_keys: ClassVar[frozenset[str]] = frozenset({"account_webhook_secret"})

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        secret = options.get("account_webhook_secret")
        if secret is None:
            return []
        if not isinstance(secret, str):
            return ["account_webhook_secret must be a string"]
        if len(secret) < MIN_ACCOUNT_SECRET_CHARS:
            return [
                f"account_webhook_secret is too short ({len(secret)} characters; use at "
                f"least {MIN_ACCOUNT_SECRET_CHARS}, e.g. from `relay gen-secret`)"
            ]
        return []

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._client = client

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self.config.api_key, "Content-Type": "application/json"}

    def supported_actions(self) -> tuple[str, ...]:
        return tuple(_ENDPOINTS)

    async def submit(self, spec: SubmitSpec) -> SubmitResult:
        if spec.action not in _ENDPOINTS:
            raise UnsupportedAction(self.name, spec.action, list(self.supported_actions()))
        path, extra = _ENDPOINTS[spec.action]
        body: dict[str, Any] = {"parent_task_id": spec.parent_id, **extra}
        if spec.callback_url:
            body["webhook_url"] = spec.callback_url
        if spec.callback_secret:
            body["webhook_secret"] = spec.callback_secret
        answer = await request_json(
            self._client,
            "POST",
            self.config.base_url + path,
            provider=self.name,
            headers=self._headers(),
            json=body,
            check=_raise_for_errors_body,
        )
        task_id = answer.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise ProviderUnavailable(
                "apiframe accepted the upscale but sent no task_id", provider=self.name
            )
        return SubmitResult(provider_task_id=task_id)

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, job_secret: str | None
    ) -> None:
        if job_secret is None:
            return
        _check_secret(headers, job_secret)

    def verify_account_callback(self, headers: Mapping[str, str], body: bytes) -> None:
        secret = self.config.options.get("account_webhook_secret")
        if not isinstance(secret, str) or not secret:
            raise Unauthorized("apiframe account callbacks need apiframe.account_webhook_secret")
        _check_secret(headers, secret)

    def parse_callback(self, payload: Any) -> ProviderUpdate:
        return parse_task(payload)

    async def poll(self, task_id: str) -> ProviderUpdate:
        answer = await request_json(
            self._client,
            "POST",
            self.config.base_url + "/fetch",
            provider=self.name,
            headers=self._headers(),
            json={"task_id": task_id},
        )
        return parse_task(answer)


def _raise_for_errors_body(response: httpx.Response) -> None:
    """The documented error body (``{"errors": [{"msg"}]}``) is a 400, even with HTTP 200."""
    if response.is_success and json_or_empty(response).get("errors"):
        raise_for_status(response, ApiframeProvider.name, status=400)


def _check_secret(headers: Mapping[str, str], expected: str) -> None:
    given = headers.get(SECRET_HEADER)
    if not given:
        raise Unauthorized(f"missing {SECRET_HEADER} header")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized(f"wrong {SECRET_HEADER}")


def parse_task(payload: Any) -> ProviderUpdate:
    """Normalise an Apiframe task object (callback body or ``/fetch`` answer)."""
    body = require_object(payload)
    task_id = require_str(body, "task_id")
    status_value = body.get("status")
    if status_value is not None and not isinstance(status_value, str):
        raise PayloadError("status", "must be a string")
    status = (status_value or "").strip().lower()
    image_url = optional_str(body, "image_url")
    image_urls = string_list(body.get("image_urls"), "image_urls")
    progress = parse_progress(body.get("percentage", body.get("progress")), "percentage")
    parent_id = optional_str(body, "parent_task_id")
    if status in _FAILED:
        message = optional_str(body, "message", "error") or "apiframe reported the task failed"
        return ProviderUpdate(
            provider_task_id=task_id,
            state=UpdateState.FAILED,
            progress=progress,
            error_code=failure_code(message),
            error_message=message,
            parent_id=parent_id,
        )
    if status in _DONE or (not status and (image_url or image_urls)):
        if not (image_url or image_urls):
            raise PayloadError("image_url", "is missing from a finished task")
        return ProviderUpdate(
            provider_task_id=task_id,
            state=UpdateState.COMPLETED,
            progress=100,
            image_url=image_url or image_urls[0],
            image_urls=image_urls or ((image_url,) if image_url else ()),
            parent_id=parent_id,
        )
    if not status:
        raise PayloadError("status", "is missing and the body has no image_url")
    return ProviderUpdate(
        provider_task_id=task_id,
        state=UpdateState.PROGRESS,
        progress=progress,
        parent_id=parent_id,
    )
