"""``type = "slack"``: post a readable Block Kit message to a Slack incoming webhook.

Options: ``url`` (the webhook URL; it embeds a secret, so it never appears in an
error), ``rate_per_s`` (default 1, Slack's limit per webhook) and ``burst`` (default 3).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from handlers.retry_after import retry_after
from handlers.sinks.base import ANSWER_BYTES, SinkAnswer, SinkConfig, required_options
from handlers.sinks.client import HttpClient, TransportError
from handlers.sinks.pacing import shared_bucket
from receiver.errors import DeliveryFailed
from receiver.events import Event, EventType

# Slack's answers that no retry can fix (besides HTTP 404 / 410).
PERMANENT_ERRORS = frozenset(
    {
        "invalid_payload",
        "no_service",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "posting_to_general_channel_denied",
        "invalid_token",
    }
)
_TITLES = {
    EventType.COMPLETED: "Upscale completed",
    EventType.FAILED: "Upscale failed",
    EventType.PROGRESS: "Upscale progress",
    EventType.TEST: "Relay test",
}
_HEADERS = {"content-type": "application/json", "user-agent": "upscale-relay"}
_FIELD_MAX = 2000
_SLOT_TRIES = 3  # reservations voided by pauses before a delivery goes back to the queue
_IMAGE_URL_MAX = 3000


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as its docs require."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _field(label: str, value: str, *, code: bool = False) -> dict[str, str]:
    shown = f"`{_escape(value)}`" if code else _escape(value)
    return {"type": "mrkdwn", "text": f"*{label}*\n{shown}"[:_FIELD_MAX]}


def slack_message(event: Event) -> dict[str, Any]:
    """The webhook body for ``event``: header, facts as fields, the image (completed)
    or the error (failed), the event id, and a plain ``text`` fallback."""
    data = event.data
    title = _TITLES[event.type]
    fields = [_field("Provider", data["provider"])]
    if data["action"]:
        fields.append(_field("Action", data["action"]))
    if data["ref"]:
        fields.append(_field("Ref", data["ref"]))
    fields.append(_field("Job", data["job_id"] or "none", code=True))
    fields.append(_field("Provider task", data["provider_task_id"], code=True))
    if event.type is EventType.PROGRESS and data["progress"] is not None:
        fields.append(_field("Progress", f"{data['progress']}%"))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {"type": "section", "fields": fields},
    ]
    summary = f"{title}: {data['provider']} {data['action'] or 'task'}"
    if data["ref"]:
        summary += f" (ref {data['ref']})"
    error = data["error"]
    if event.type is EventType.FAILED and error is not None:
        text = f"*Error* `{_escape(error['code'])}`: {_escape(error['message'])}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
        summary += f" - {error['code']}: {error['message']}"
    image_url = data["image_url"]
    if event.type is EventType.COMPLETED and image_url:
        if image_url.startswith(("https://", "http://")) and len(image_url) <= _IMAGE_URL_MAX:
            alt = f"Upscaled image for {data['ref'] or data['job_id'] or data['provider_task_id']}"
            blocks.append({"type": "image", "image_url": image_url, "alt_text": alt[:2000]})
        summary += f" {image_url}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"`{event.id}`"}]})
    return {"text": _escape(summary)[:3000], "blocks": blocks}


def _number(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key)
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    )


class SlackSink:
    """Post each event to an incoming webhook, paced per webhook URL across every
    SlackSink in the process; a 429's ``Retry-After`` also pauses that pacing."""

    type: ClassVar[str] = "slack"
    options_keys: ClassVar[frozenset[str]] = frozenset({"url", "rate_per_s", "burst"})

    def __init__(self, config: SinkConfig, client: HttpClient) -> None:
        self.config = config
        self._client = client
        self._url = str(config.options["url"])
        rate = float(config.options.get("rate_per_s") or 1.0)
        burst = int(config.options.get("burst") or 3)
        self._bucket = shared_bucket(self._url, rate, burst)

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = required_options(options, "url")
        url = options.get("url")
        if url and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            problems.append("'url' must be an http:// or https:// URL")
        for key in ("rate_per_s", "burst"):
            if not _number(options, key):
                problems.append(f"'{key}' must be a positive number")
        return problems

    async def _wait_for_slot(self) -> None:
        """Wait for a send slot; when the webhook was paused meanwhile (a 429 to another
        delivery), the slot is void: take a new one. ``throttled`` when none is near."""
        for _ in range(_SLOT_TRIES):
            generation = self._bucket.generation
            wait_s = self._bucket.reserve(max_wait_s=self.config.timeout_s)
            if wait_s is None:
                break
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if self._bucket.generation == generation:
                return
        raise DeliveryFailed(
            "Slack pacing: no send slot within the sink timeout",
            permanent=False,
            retry_after_s=self._bucket.next_slot_s(),
            throttled=True,
        )

    async def deliver(self, event: Event) -> SinkAnswer:
        await self._wait_for_slot()
        body = json.dumps(slack_message(event), ensure_ascii=False, separators=(",", ":")).encode()
        try:
            response = await self._client.post(self._url, body, _HEADERS, self.config.timeout_s)
        except TransportError as exc:
            raise DeliveryFailed(f"Slack: {exc.message}") from exc
        status, answer = response.status, response.text.strip()[:200]
        raw = response.body[:ANSWER_BYTES]
        if 200 <= status < 300:
            return SinkAnswer(status, raw)
        if status == 429:
            retry_after_s = retry_after(response) or 1.0
            self._bucket.pause(retry_after_s)
            raise DeliveryFailed(
                f"Slack rate limited: {answer}",
                status=429,
                retry_after_s=retry_after_s,
                response_body=raw,
            )
        permanent = True if answer in PERMANENT_ERRORS or status in (404, 410) else None
        raise DeliveryFailed(
            f"Slack HTTP {status}: {answer}", status=status, permanent=permanent, response_body=raw
        )

    async def aclose(self) -> None:
        return None
