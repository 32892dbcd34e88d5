"""APIMart (api.apimart.ai), its Midjourney routes.

Submit: ``POST /v1/midjourney/generations/upscale`` with ``task_id`` (the parent, which
must be SUCCESS) and ``index`` 1-4 for U1-U4, or ``custom_id`` for the HD upscales: the
``customId`` of the parent's button whose ``label`` is the Midjourney label, read from
``GET /v1/midjourney/{parent}``; Bearer key. APIMart never calls back, so the relay
polls ``GET /v1/midjourney/{task_id}``.

Looseness handled: the submit answer's ``data`` is an array (an object is accepted too);
``progress`` is a string such as ``"42%"``; failures are in ``fail_reason``. The parser
also reads the unified ``/v1/tasks/{id}`` shape (``{"code", "data": {...}}``, lower-case
statuses, ``result.images[].url`` as an array or a string, ``error`` an object).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from handlers.providers.actions import ALL_ACTIONS, GRID_ACTIONS, LABELS, grid_index
from handlers.providers.base import (
    ProviderConfig,
    SubmitResult,
    SubmitSpec,
    body_error_code,
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
from receiver.errors import (
    PayloadError,
    ProviderRejected,
    ProviderUnavailable,
    Unauthorized,
    UnsupportedAction,
)
from receiver.events import CallbackMode, ErrorCode, ProviderUpdate, UpdateState

if TYPE_CHECKING:
    import httpx  # a provider gets the client; importing it costs a cold start

_RUNNING = {"NOT_START", "SUBMITTED", "IN_PROGRESS", "MODAL", "PENDING", "PROCESSING"}
_DONE = {"SUCCESS", "COMPLETED"}
_FAILED = {"FAILURE", "FAILED"}
_CANCELLED = {"CANCELLED", "CANCELED"}


class ApimartProvider:
    """Drives APIMart's Midjourney upscale (U1-U4 by index, HD upscales by button)."""

    name: ClassVar[str] = "apimart"
    default_base_url: ClassVar[str] = "https://api.apimart.ai"
    callback_mode: ClassVar[CallbackMode] = CallbackMode.POLL
    mints_job_secret: ClassVar[bool] = False
    confirm_by_poll_default: ClassVar[bool] = False
    max_jobs_default: ClassVar[int | None] = None
    options_keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        return []  # no provider-specific keys

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._client = client

    def supported_actions(self) -> tuple[str, ...]:
        return ALL_ACTIONS

    async def submit(self, spec: SubmitSpec) -> SubmitResult:
        if spec.action not in LABELS:
            raise UnsupportedAction(self.name, spec.action, list(self.supported_actions()))
        body: dict[str, Any] = {"task_id": spec.parent_id}
        if spec.action in GRID_ACTIONS:
            body["index"] = grid_index(spec.action)
        else:
            body["custom_id"] = await self._custom_id(spec.parent_id, LABELS[spec.action])
        answer = await self._call("POST", "/v1/midjourney/generations/upscale", json=body)
        return SubmitResult(provider_task_id=_submitted_task_id(answer))

    async def poll(self, task_id: str) -> ProviderUpdate:
        return parse_task(await self._call("GET", f"/v1/midjourney/{quote(task_id, safe='')}"))

    async def _custom_id(self, parent_id: str, label: str) -> str:
        """The ``customId`` of the parent's button labelled ``label``."""
        answer = await self._call("GET", f"/v1/midjourney/{quote(parent_id, safe='')}")
        try:
            task, prefix = _unwrap(answer)
            buttons = parse_buttons(task.get("buttons"), prefix + "buttons")
        except PayloadError as exc:
            raise ProviderUnavailable(
                f"apimart sent the parent task in a shape we cannot read: {exc.message}",
                provider=self.name,
            ) from exc
        for button_label, custom_id in buttons:
            if button_label == label:
                return custom_id
        offered = [button_label for button_label, _ in buttons]
        error = ProviderRejected(
            f"apimart's parent task offers no {label!r} button"
            f" (it offers: {', '.join(offered) or 'none'})",
            provider=self.name,
        )
        error.context["offered"] = offered
        raise error

    async def _call(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        return await request_json(
            self._client,
            method,
            self.config.base_url + path,
            provider=self.name,
            headers={"Authorization": f"Bearer {self.config.api_key}"},
            json=json,
            check=_check_answer,
        )

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, job_secret: str | None
    ) -> None:
        raise Unauthorized("apimart never calls back; its jobs are polled")

    def verify_account_callback(self, headers: Mapping[str, str], body: bytes) -> None:
        raise Unauthorized("apimart never calls back; its jobs are polled")

    def parse_callback(self, payload: Any) -> ProviderUpdate:
        return parse_task(payload)


def _check_answer(response: httpx.Response) -> None:
    """The HTTP status, then a ``code`` outside 2xx in the body (the unified shape's
    envelope), mapped with the error body's own text."""
    body = json_or_empty(response)
    message = _error_message(body)
    raise_for_status(response, "apimart", message=message)
    code = body_error_code(body)
    if code is not None:
        raise_for_status(response, "apimart", status=code, message=message)


def _error_message(body: Mapping[str, Any]) -> str | None:
    """The text of an APIMart error body: ``error`` as a string or ``{message}``,
    else ``message``/``msg``/``fail_reason``."""
    error = body.get("error")
    if isinstance(error, dict):
        text = optional_str(error, "message", "msg")
        if text:
            return text[:200]
    text = optional_str(body, "error", "message", "msg", "fail_reason")
    return text[:200] if text else None


def _submitted_task_id(body: Mapping[str, Any]) -> str:
    """``data[0].task_id`` of a submit answer (``data`` may also be an object)."""
    data = body.get("data")
    item = data[0] if isinstance(data, list) and data else data
    task_id = item.get("task_id") if isinstance(item, dict) else None
    if not isinstance(task_id, str) or not task_id:
        raise ProviderUnavailable(
            "apimart accepted the upscale but sent no data[0].task_id", provider="apimart"
        )
    return task_id


def _unwrap(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The task object and its field path prefix: the MJ-style answer is the task
    itself, the unified one wraps it in ``{"code", "data"}``."""
    if "status" not in body and "data" in body:
        return require_object(body["data"], "data"), "data."
    return body, ""


def parse_buttons(value: Any, field_name: str = "buttons") -> tuple[tuple[str, str], ...]:
    """``[{"customId", "label"}]`` as ``(label, customId)`` pairs (None → none)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PayloadError(field_name, "must be a list of {customId, label}")
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise PayloadError(f"{field_name}[{index}]", "must be an object")
        label = require_str(item, "label", path=f"{field_name}[{index}].label")
        custom_id = require_str(item, "customId", path=f"{field_name}[{index}].customId")
        pairs.append((label, custom_id))
    return tuple(pairs)


def parse_task(payload: Any) -> ProviderUpdate:
    """Normalise an APIMart task: the MJ-style ``/v1/midjourney/{id}`` answer or the
    unified ``/v1/tasks/{id}`` one."""
    task, prefix = _unwrap(require_object(payload))
    task_id = require_str(task, "id", path=prefix + "id")
    status = require_str(task, "status", path=prefix + "status").strip().upper()
    progress = parse_progress(task.get("progress"), prefix + "progress")
    buttons = tuple(label for label, _ in parse_buttons(task.get("buttons"), prefix + "buttons"))
    if status in _RUNNING:
        return ProviderUpdate(
            provider_task_id=task_id, state=UpdateState.PROGRESS, progress=progress
        )
    if status in _DONE:
        urls = _image_urls(task, prefix)
        return ProviderUpdate(
            provider_task_id=task_id,
            state=UpdateState.COMPLETED,
            progress=100,
            image_url=urls[0],
            image_urls=urls,
            buttons=buttons,
        )
    if status in _FAILED or status in _CANCELLED:
        cancelled = status in _CANCELLED
        message = _failure_text(task) or (
            "apimart cancelled the task" if cancelled else "apimart reported the task failed"
        )
        return ProviderUpdate(
            provider_task_id=task_id,
            state=UpdateState.FAILED,
            progress=progress,
            error_code=ErrorCode.CANCELLED if cancelled else failure_code(message),
            error_message=message,
        )
    raise PayloadError(prefix + "status", "is not an APIMart task status")


def _image_urls(task: Mapping[str, Any], prefix: str) -> tuple[str, ...]:
    """``image_urls[]`` (MJ-style) or ``result.images[].url`` (unified, each ``url`` an
    array or a string); a finished task without any is a ``PayloadError``."""
    if task.get("image_urls") is not None or task.get("result") is None:
        urls = string_list(task.get("image_urls"), prefix + "image_urls")
        if not urls:
            raise PayloadError(prefix + "image_urls", "is missing from a finished task")
        return urls
    result = require_object(task["result"], prefix + "result")
    images = result.get("images")
    where = prefix + "result.images"
    if not isinstance(images, list) or not images:
        raise PayloadError(where, "must be a non-empty list")
    found: list[str] = []
    for index, image in enumerate(images):
        url = image.get("url") if isinstance(image, dict) else None
        if isinstance(url, str) and url:
            found.append(url)
        elif isinstance(url, list) and url and all(isinstance(u, str) and u for u in url):
            found.extend(url)
        else:
            raise PayloadError(f"{where}[{index}].url", "must be a URL or a list of URLs")
    return tuple(found)


def _failure_text(task: Mapping[str, Any]) -> str | None:
    """``fail_reason`` (MJ-style) or ``error`` as text or ``{message, code, type}``."""
    reason = optional_str(task, "fail_reason")
    if reason:
        return reason
    error = task.get("error")
    if isinstance(error, str) and error:
        return error
    if isinstance(error, dict):
        return optional_str(error, "message", "msg", "type", "code")
    return None
