"""useapi.net, Midjourney API v2 (api.useapi.net).

Submit: ``POST /v2/jobs/button`` with ``Authorization: Bearer <key>`` and
``{"jobid": parent, "button": label, "replyUrl": url, "replyRef": our job id,
"maxJobs": n}``; the answer is the new job record (``jobid``, ``status``). Callbacks
go to ``replyUrl`` and carry the job record that the poll,
``GET /v2/jobs/?jobid=<id>``, answers with. useapi documents no callback authenticity:
the signed callback URL is the only check, and account-level callbacks are refused.

Documented answers handled: 409 "Button U1 already executed by job <jobid>" points at
the job that already ran (returned as an existing task); 429 ("Maximum of <maxJobs>
jobs executing in parallel", or Discord's own 429) asks for a 10-30 s wait; 422 is a
moderated request; 504/596 mean useapi cannot run jobs now.

Looseness handled: statuses ``created``/``started``/``progress`` all mean running; the
progress percentage only exists inside the Discord ``content`` text; images are in
``attachments[].url``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from handlers.providers.actions import ALL_ACTIONS, LABELS
from handlers.providers.base import (
    ProviderConfig,
    SubmitResult,
    SubmitSpec,
    json_object,
    json_or_empty,
    optional_str,
    raise_for_status,
    request_json,
    require_object,
    require_str,
    retry_after_s,
    send,
    string_list,
)
from receiver.errors import (
    PayloadError,
    ProviderAtCapacity,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    Unauthorized,
    UnsupportedAction,
)
from receiver.events import CallbackMode, ErrorCode, ProviderUpdate, UpdateState
from receiver.jsonbody import decode_nested

if TYPE_CHECKING:
    import httpx  # a provider gets the client; importing it costs a cold start

#: useapi's advice on 429: "wait in a loop for at least 10..30 seconds"
RETRY_AFTER_MIN_S = 10
RETRY_AFTER_MAX_S = 30

_RUNNING = {"created", "started", "progress"}
_FAILED = {
    "failed": ErrorCode.FAILED,
    "moderated": ErrorCode.MODERATED,
    "cancelled": ErrorCode.CANCELLED,
}
_PERCENT = re.compile(r"\((\d{1,3})%\)")
_EXISTING_JOB = re.compile(r"already executed by job (\S+)")


class UseapiProvider:
    """Drives useapi.net's v2 button endpoint."""

    name: ClassVar[str] = "useapi"
    default_base_url: ClassVar[str] = "https://api.useapi.net"
    callback_mode: ClassVar[CallbackMode] = CallbackMode.WEBHOOK
    mints_job_secret: ClassVar[bool] = False
    confirm_by_poll_default: ClassVar[bool] = False
    max_jobs_default: ClassVar[int | None] = 3
    options_keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        return []  # no provider-specific keys

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self._client = client

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"}

    def supported_actions(self) -> tuple[str, ...]:
        return ALL_ACTIONS

    async def submit(self, spec: SubmitSpec) -> SubmitResult:
        if spec.action not in LABELS:
            raise UnsupportedAction(self.name, spec.action, list(ALL_ACTIONS))
        body: dict[str, Any] = {
            "jobid": spec.parent_id,
            "button": LABELS[spec.action],
            "replyRef": spec.job_id,
            "maxJobs": self.config.max_jobs or self.max_jobs_default,
        }
        if spec.callback_url:
            body["replyUrl"] = spec.callback_url
        request = self._client.build_request(
            "POST", self.config.base_url + "/v2/jobs/button", json=body, headers=self._headers()
        )
        response = await send(self._client, request, self.name)
        if response.status_code == 409:
            return SubmitResult(provider_task_id=self._existing_job(response), existing=True)
        if response.status_code == 429:
            # "Maximum of N jobs executing" (it lists executingJobs) means our plan's
            # concurrency is full: the relay queues the job. Other 429s go to the client.
            error = ProviderAtCapacity if _at_capacity(response) else ProviderRateLimited
            raise _busy(response, error)
        if response.status_code == 422:
            raise ProviderRejected(
                f"useapi moderated the request: {_error_body_text(response)}",
                provider=self.name,
                status=422,
            )
        raise_for_status(response, self.name)
        job_id = json_object(response, self.name).get("jobid")
        if not isinstance(job_id, str) or not job_id:
            raise ProviderUnavailable(
                "useapi accepted the button press but sent no jobid", provider=self.name
            )
        return SubmitResult(provider_task_id=job_id)

    def _existing_job(self, response: httpx.Response) -> str:
        """The job a 409 names: its ``jobid`` field, else the one in its ``error`` text."""
        body = json_or_empty(response)
        job_id = optional_str(body, "jobid")
        if job_id is None:
            match = _EXISTING_JOB.search(optional_str(body, "error") or "")
            job_id = match.group(1) if match else None
        if job_id is None:
            raise ProviderRejected(
                f"useapi refused a repeated button: {_error_body_text(response)}",
                provider=self.name,
                status=409,
            )
        return job_id

    def verify_callback(
        self, headers: Mapping[str, str], body: bytes, job_secret: str | None
    ) -> None:
        """useapi signs nothing; the signed callback URL was the check."""

    def verify_account_callback(self, headers: Mapping[str, str], body: bytes) -> None:
        raise Unauthorized("useapi callbacks carry no verifiable secret; use per-job URLs")

    def parse_callback(self, payload: Any) -> ProviderUpdate:
        return parse_job(payload)

    async def poll(self, task_id: str) -> ProviderUpdate:
        answer = await request_json(
            self._client,
            "GET",
            self.config.base_url + "/v2/jobs/",
            provider=self.name,
            headers=self._headers(),
            params={"jobid": task_id},
            check=_raise_if_busy,
        )
        return parse_job(answer)


def _raise_if_busy(response: httpx.Response) -> None:
    """A 429 on a poll is ``ProviderRateLimited``."""
    if response.status_code == 429:
        raise _busy(response, ProviderRateLimited)


def _busy(response: httpx.Response, error: type[ProviderRateLimited]) -> ProviderRateLimited:
    """useapi's 429 as ``error``, with useapi's 10-30 s wait."""
    return error(
        f"useapi is busy: {_error_body_text(response)}",
        provider=UseapiProvider.name,
        status=429,
        retry_after_s=_retry_after(response),
    )


def _error_and_details(body: Mapping[str, Any]) -> str:
    """``error`` and ``errorDetails`` of a useapi body, joined (empty when neither)."""
    parts = [optional_str(body, "error"), optional_str(body, "errorDetails")]
    return ": ".join(part for part in parts if part)


def _at_capacity(response: httpx.Response) -> bool:
    return "executingJobs" in json_or_empty(response)


def _error_body_text(response: httpx.Response) -> str:
    """``error`` and ``errorDetails`` of a useapi error body, joined."""
    return _error_and_details(json_or_empty(response))[:300] or response.reason_phrase


def _retry_after(response: httpx.Response) -> int:
    """A ``Retry-After`` header wins; else Discord's ``retry_after`` (inside
    ``errorDetails``) clamped to 10-30 s; else a jittered 10-30 s."""
    fallback = random.randint(RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S)
    if "retry-after" in response.headers:
        return retry_after_s(response, default=fallback)
    details = optional_str(json_or_empty(response), "errorDetails")
    try:
        discord = decode_nested(details, "errorDetails") if details else None
    except PayloadError:
        discord = None
    wait = discord.get("retry_after") if isinstance(discord, dict) else None
    if isinstance(wait, int | float) and not isinstance(wait, bool):
        return int(min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, wait)))
    return fallback


def _progress(body: Mapping[str, Any]) -> int | None:
    content = body.get("content")
    if content is None:
        return None
    if not isinstance(content, str):
        raise PayloadError("content", "must be a string")
    match = _PERCENT.search(content)
    return min(100, int(match.group(1))) if match else None


def _attachment_urls(body: Mapping[str, Any]) -> tuple[str, ...]:
    attachments = body.get("attachments")
    if attachments is None:
        return ()
    if not isinstance(attachments, list):
        raise PayloadError("attachments", "must be a list")
    urls: list[str] = []
    for index, item in enumerate(attachments):
        if not isinstance(item, dict):
            raise PayloadError(f"attachments[{index}]", "must be an object")
        urls.append(require_str(item, "url", path=f"attachments[{index}].url"))
    return tuple(urls)


def parse_job(payload: Any) -> ProviderUpdate:
    """Normalise a useapi job record (callback body or poll answer)."""
    body = require_object(payload)
    job_id = require_str(body, "jobid")
    status_value = body.get("status")
    if not isinstance(status_value, str) or not status_value.strip():
        raise PayloadError("status")
    status = status_value.strip().lower()
    common: dict[str, Any] = {
        "provider_task_id": job_id,
        "buttons": string_list(body.get("buttons"), "buttons"),
        "parent_id": optional_str(body, "parentJobId"),
        "correlation_id": optional_str(body, "replyRef"),
    }
    if status in _RUNNING:
        return ProviderUpdate(state=UpdateState.PROGRESS, progress=_progress(body), **common)
    if status == "completed":
        urls = _attachment_urls(body)
        if not urls:
            raise PayloadError("attachments", "is empty in a completed job")
        return ProviderUpdate(
            state=UpdateState.COMPLETED, progress=100, image_url=urls[0], image_urls=urls, **common
        )
    if status in _FAILED:
        message = _error_and_details(body) or f"useapi reported the job {status}"
        return ProviderUpdate(
            state=UpdateState.FAILED, error_code=_FAILED[status], error_message=message, **common
        )
    raise PayloadError("status", f"is {status_value[:40]!r}, not a useapi job status")
