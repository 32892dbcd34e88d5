"""ImaginePro (api.imaginepro.ai).

Submit: ``POST /api/v1/nova/button`` with ``Authorization: Bearer <key>`` and
``{"messageId": parent, "button": label, "ref": our job id, "webhookOverride": url}``;
the answer is ``{"success", "messageId", "createdAt", "error"?}``. Callbacks go to
``webhookOverride`` and carry the same message object that the poll,
``GET /api/v1/message/fetch/{messageId}``, answers with (status ``QUEUED``,
``PROCESSING``, ``DONE`` or ``FAIL``). ImaginePro documents no callback authenticity:
the signed callback URL is the only check, and account-level callbacks are refused.

Looseness handled: ``success`` is a boolean (docs) or a status string (SDK); the parent
is ``originatingMessageId`` (example) or ``originalMessageId`` (schema); ``progress`` is
a number or a string; the image is in ``uri``, else ``originalUrl``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from handlers.providers.actions import LABELS
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
from receiver.errors import (
    PayloadError,
    ProviderRejected,
    ProviderUnavailable,
    Unauthorized,
    UnsupportedAction,
)
from receiver.events import CallbackMode, ProviderUpdate, UpdateState

if TYPE_CHECKING:
    import httpx  # a provider gets the client; importing it costs a cold start

#: ImaginePro lists every upscale button except Redo Upscale (Subtle)/(Creative)
#: (current, legacy) endpoints; the fetch paths take the message id appended
BUTTON_PATHS = ("/api/v1/nova/button", "/api/v1/midjourney/button")
FETCH_PATHS = ("/api/v1/message/fetch/", "/api/v1/midjourney/message/")

SUPPORTED: tuple[str, ...] = (
    "U1",
    "U2",
    "U3",
    "U4",
    "upscale_2x",
    "upscale_4x",
    "upscale_subtle",
    "upscale_creative",
    "redo_upscale_2x",
    "redo_upscale_4x",
)

_RUNNING = {"QUEUED", "PROCESSING"}
#: ImaginePro's own moderation wording (not the shared list: no "nsfw", "sensitive" …)
_MODERATION_WORDS = ("moderat", "banned", "community standards", "blocked")


class ImagineProProvider:
    """Drives ImaginePro's button endpoint."""

    name: ClassVar[str] = "imaginepro"
    default_base_url: ClassVar[str] = "https://api.imaginepro.ai"
    callback_mode: ClassVar[CallbackMode] = CallbackMode.WEBHOOK
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
        self._legacy = False

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"}

    def supported_actions(self) -> tuple[str, ...]:
        return SUPPORTED

    async def submit(self, spec: SubmitSpec) -> SubmitResult:
        if spec.action not in SUPPORTED:
            raise UnsupportedAction(self.name, spec.action, list(SUPPORTED))
        body: dict[str, Any] = {
            "messageId": spec.parent_id,
            "button": LABELS[spec.action],
            "ref": spec.job_id,
        }
        if spec.callback_url:
            body["webhookOverride"] = spec.callback_url
        answer = await self._request("POST", BUTTON_PATHS, json=body, check=_check_button_answer)
        message_id = answer.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            raise ProviderUnavailable(
                "imaginepro accepted the button press but sent no messageId", provider=self.name
            )
        return SubmitResult(provider_task_id=message_id)

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, job_secret: str | None
    ) -> None:
        """ImaginePro signs nothing; the signed callback URL was the check."""

    def verify_account_callback(self, headers: Mapping[str, str], body: bytes) -> None:
        raise Unauthorized("imaginepro callbacks carry no verifiable secret; use per-job URLs")

    def parse_callback(self, payload: Any) -> ProviderUpdate:
        return parse_message(payload)

    async def poll(self, task_id: str) -> ProviderUpdate:
        current, legacy = (path + quote(task_id, safe="") for path in FETCH_PATHS)
        paths = (current, legacy)
        return parse_message(await self._request("GET", paths, check=_check_status))

    async def _request(
        self,
        method: str,
        paths: tuple[str, str],
        *,
        json: Any = None,
        check: Callable[[httpx.Response], None],
    ) -> dict[str, Any]:
        """The current ("nova") endpoint, falling back to the legacy one when the
        current one answers 404 (an older deployment or a legacy-only account)."""
        current, legacy = paths
        if self._legacy:
            current = legacy
        try:
            return await request_json(
                self._client,
                method,
                self.config.base_url + current,
                provider=self.name,
                headers=self._headers(),
                json=json,
                check=check,
            )
        except ProviderRejected as exc:
            if exc.status != 404 or current == legacy:
                raise
        answer = await request_json(
            self._client,
            method,
            self.config.base_url + legacy,
            provider=self.name,
            headers=self._headers(),
            json=json,
            check=check,
        )
        self._legacy = True
        return answer


def _check_status(response: httpx.Response) -> None:
    """An error status, mapped with the error body's own text."""
    raise_for_status(response, ImagineProProvider.name, message=_error_message(response))


def _check_button_answer(response: httpx.Response) -> None:
    """An error status, or a 2xx whose ``success`` is false (or ``FAIL``) or that
    carries an ``error`` text: both are refusals."""
    _check_status(response)
    answer = json_or_empty(response)
    success = answer.get("success")
    error = answer.get("error")
    refused = success is False or (
        isinstance(success, str) and success.strip().lower() in ("false", "fail", "failed")
    )
    if refused or (isinstance(error, str) and error):
        text = error if isinstance(error, str) and error else "success is false"
        raise ProviderRejected(
            f"imaginepro rejected the request: {text[:200]}",
            provider=ImagineProProvider.name,
            status=response.status_code,
        )


def _error_message(response: httpx.Response) -> str | None:
    """The text of an ImaginePro error body: ``error`` (submit shape) or the SDK's
    ``{"message", "error", "statusCode"}`` shape, whose ``message`` is more specific."""
    if response.is_success:
        return None
    body = json_or_empty(response)
    message = body.get("message")
    if isinstance(message, list):
        message = "; ".join(str(item) for item in message)
    for value in (message, body.get("error")):
        if isinstance(value, str) and value:
            return value[:200]
    return None


def parse_message(payload: Any) -> ProviderUpdate:
    """Normalise an ImaginePro message (callback body or fetch answer)."""
    body = require_object(payload)
    message_id = require_str(body, "messageId")
    status_value = body.get("status")
    if not isinstance(status_value, str) or not status_value.strip():
        raise PayloadError("status")
    status = status_value.strip().upper()
    progress = parse_progress(body.get("progress"))
    common: dict[str, Any] = {
        "provider_task_id": message_id,
        "buttons": string_list(body.get("buttons"), "buttons"),
        "parent_id": optional_str(body, "originatingMessageId", "originalMessageId"),
        "correlation_id": optional_str(body, "ref"),
    }
    if status in _RUNNING:
        return ProviderUpdate(state=UpdateState.PROGRESS, progress=progress, **common)
    if status == "DONE":
        image_url = optional_str(body, "uri", "originalUrl")
        if image_url is None:
            raise PayloadError("uri", "is missing from a DONE message (no originalUrl either)")
        return ProviderUpdate(
            state=UpdateState.COMPLETED,
            progress=100,
            image_url=image_url,
            image_urls=(image_url,),
            **common,
        )
    if status == "FAIL":
        message = optional_str(body, "error") or "imaginepro reported the job failed"
        return ProviderUpdate(
            state=UpdateState.FAILED,
            progress=progress,
            error_code=failure_code(message, _MODERATION_WORDS),
            error_message=message,
            **common,
        )
    raise PayloadError("status", f"is {status_value[:40]!r}, not QUEUED, PROCESSING, DONE or FAIL")
