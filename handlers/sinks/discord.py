"""``type = "discord"``: post each event as an embed to a Discord webhook.

Options: ``url`` (the webhook URL, ``https://discord.com/api/webhooks/ID/TOKEN``; it
embeds a secret, so it never appears in an error), ``username`` (optional: the name
the message is posted under, 1 to 80 characters) and ``job_url`` (optional: a template
such as ``https://app.example.com/jobs/{job_id}`` for the embed's link; without it
the embed links to the upscaled image).

The message: a one-line ``content`` (≤ 2,000 characters) and one embed (title,
colour by type, fields for provider, action, ref, job and task, the image, the event
id in the footer) kept inside Discord's limits (title 256, description 4,096, 25
fields of 256/1,024, 6,000 characters in all); ``allowed_mentions`` is empty, so no
event can ever ping ``@everyone``. It is posted with ``?wait=true``: the event counts
as delivered once Discord answered 2xx with the created message.

Rate limits: sends to one webhook are paced across the process by a token bucket
(Discord allows about 5 per 2 s per webhook) and by the window its answers describe
(``X-RateLimit-Remaining`` sends left, counting those in flight, until
``X-RateLimit-Reset-After``; see ``pacing.RateWindow``); a 429 pauses the webhook for its JSON
``retry_after`` (or ``Retry-After``) and, when that fits in the sink's timeout, is
retried once in the same delivery, else raised with ``status=429`` and
``retry_after_s``. A 404 means the webhook was deleted: dead at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from handlers.retry_after import parse_retry_after
from handlers.sinks.base import SinkConfig, required_options
from handlers.sinks.client import Answer, HttpClient, TransportError
from handlers.sinks.pacing import RateWindow, TokenBucket, shared_bucket, shared_window
from handlers.sinks.templates import render, template_problems
from receiver.errors import DeliveryFailed
from receiver.events import Event, EventType

RATE_PER_S = 2.5  # Discord's usual webhook limit: 5 requests per 2 s
BURST = 5
CONTENT_MAX = 2000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
USERNAME_MAX = 80
URL_MAX = 2048
_SCHEMES = ("https://", "http://")
_HEADERS = {"content-type": "application/json", "user-agent": "upscale-relay"}
_COLOURS = {
    EventType.COMPLETED: 0x2ECC71,
    EventType.FAILED: 0xE74C3C,
    EventType.PROGRESS: 0x3498DB,
}
_TITLES = {
    EventType.COMPLETED: "Upscale completed",
    EventType.FAILED: "Upscale failed",
    EventType.PROGRESS: "Upscale progress",
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(name: str, value: str, *, code: bool = False) -> dict[str, Any]:
    shown = f"`{value}`" if code and "`" not in value else value
    return {"name": name, "value": _cut(shown or "-", FIELD_VALUE_MAX), "inline": True}


def embed_size(embed: Mapping[str, Any]) -> int:
    """Characters Discord counts toward an embed's 6,000 (title, description, field
    names and values, footer text, author name)."""
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    size += len(embed.get("footer", {}).get("text", ""))
    return size + len(embed.get("author", {}).get("name", ""))


def _fit(embed: dict[str, Any]) -> dict[str, Any]:
    """Shrink the description, then the field values, until the embed fits 6,000."""
    excess = embed_size(embed) - EMBED_TOTAL_MAX
    if excess > 0 and embed.get("description"):
        keep = max(0, len(embed["description"]) - excess)
        embed["description"] = _cut(embed["description"], keep) if keep else "…"
        excess = embed_size(embed) - EMBED_TOTAL_MAX
    for item in sorted(embed.get("fields", []), key=lambda f: -len(f["value"])):
        if excess <= 0:
            break
        keep = max(1, len(item["value"]) - excess)
        item["value"] = _cut(item["value"], keep) if keep > 1 else "…"
        excess = embed_size(embed) - EMBED_TOTAL_MAX
    return embed


def _linkable(url: str | None) -> bool:
    """An http(s) URL Discord takes in an embed (it refuses longer than 2,048)."""
    return bool(url) and str(url).startswith(_SCHEMES) and len(str(url)) <= URL_MAX


def discord_embed(event: Event, link: str | None = None) -> dict[str, Any]:
    """The embed for ``event`` (inside every Discord embed limit)."""
    data = event.data
    fields = [_field("Provider", data["provider"])]
    if data["action"]:
        fields.append(_field("Action", data["action"]))
    if data["ref"]:
        fields.append(_field("Ref", data["ref"]))
    fields.append(_field("Job", data["job_id"] or "none", code=True))
    fields.append(_field("Provider task", data["provider_task_id"], code=True))
    embed: dict[str, Any] = {
        "title": _cut(_TITLES[event.type] + (f": {data['ref']}" if data["ref"] else ""), TITLE_MAX),
        "color": _COLOURS[event.type],
        "timestamp": event.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "footer": {"text": _cut(event.id, FOOTER_MAX)},
    }
    error = data["error"]
    if event.type is EventType.FAILED and error is not None:
        embed["description"] = _cut(f"**{error['code']}**: {error['message']}", DESCRIPTION_MAX)
    if event.type is EventType.PROGRESS and data["progress"] is not None:
        fields.append(_field("Progress", f"{data['progress']}%"))
    embed["fields"] = fields[:FIELDS_MAX]
    image_url = data["image_url"]
    if event.type is EventType.COMPLETED and _linkable(image_url):
        embed["image"] = {"url": image_url}
    link = link or (image_url if event.type is EventType.COMPLETED else None)
    if _linkable(link):
        embed["url"] = link
    return _fit(embed)


def discord_message(event: Event, username: str | None, link: str | None) -> dict[str, Any]:
    """The webhook body: a short content line, the embed, no mentions allowed."""
    data = event.data
    summary = f"{_TITLES[event.type]}: {data['provider']} {data['action'] or 'task'}"
    if data["ref"]:
        summary += f" (ref {data['ref']})"
    body: dict[str, Any] = {
        "content": _cut(summary, CONTENT_MAX),
        "embeds": [discord_embed(event, link)],
        "allowed_mentions": {"parse": []},
    }
    if username:
        body["username"] = username
    return body


def _username_problems(options: Mapping[str, Any]) -> list[str]:
    name = options.get("username")
    if name is None:
        return []
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= USERNAME_MAX:
        return [f"'username' must be 1 to {USERNAME_MAX} characters"]
    lowered = name.lower()
    if "discord" in lowered or "clyde" in lowered or lowered in ("everyone", "here"):
        return ["'username' may not contain 'discord' or 'clyde' (Discord refuses it)"]
    return []


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(86400.0, seconds)) if math.isfinite(seconds) else None


def _count(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _json(response: Answer) -> Any:
    return json.loads(response.body)


def retry_after(response: Answer) -> float:
    """Seconds a 429 asks for: its JSON ``retry_after``, else ``Retry-After`` or
    ``X-RateLimit-Reset-After``, else one second."""
    try:
        body = _json(response)
    except ValueError:
        body = None
    seconds = _seconds(body.get("retry_after")) if isinstance(body, dict) else None
    if seconds is None:
        seconds = parse_retry_after(response.headers.get("retry-after"))
    if seconds is None:
        seconds = _seconds(response.headers.get("x-ratelimit-reset-after"))
    return 1.0 if seconds is None else seconds


def _answer(response: Answer) -> str:
    """Discord's ``message`` (and ``code``) from an error body, else its text."""
    try:
        body = _json(response)
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict) and "message" in body:
        code = f" (code {body['code']})" if "code" in body else ""
        return f"{str(body['message'])[:200]}{code}"
    return response.text.strip()[:200]


class DiscordSink:
    """Post each event to a Discord webhook with ``?wait=true``, paced per webhook."""

    type: ClassVar[str] = "discord"
    options_keys: ClassVar[frozenset[str]] = frozenset({"url", "username", "job_url"})

    def __init__(self, config: SinkConfig, client: HttpClient) -> None:
        self.config = config
        self._client = client
        options = config.options
        url = str(options["url"])
        self._url = url + ("&" if "?" in url else "?") + "wait=true"
        self._username = str(options["username"]) if options.get("username") else None
        self._job_url = str(options["job_url"]) if options.get("job_url") else None
        self._bucket: TokenBucket = shared_bucket("discord " + url, RATE_PER_S, BURST)
        self._window: RateWindow = shared_window("discord " + url, BURST)

    @classmethod
    def config_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems = required_options(options, "url")
        url = options.get("url")
        if url and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            problems.append("'url' must be an http:// or https:// URL")
        return problems + _username_problems(options) + template_problems(options, "job_url")

    def _link(self, event: Event) -> str | None:
        if self._job_url is None or (event.job_id is None and "{job_id}" in self._job_url):
            return None
        return render(self._job_url, event)

    async def _slot(self) -> None:
        """Wait for a send slot on this webhook: the process-wide bucket's next one, in
        a window Discord's headers say still has room (or give the event back, unsent,
        when that is further off than the sink's timeout)."""
        deadline = time.monotonic() + self.config.timeout_s
        wait_s = self._bucket.reserve(max_wait_s=self.config.timeout_s)
        while wait_s is not None and time.monotonic() + wait_s <= deadline:
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            wait_s = self._window.claim()
            if wait_s == 0.0:
                return
        raise DeliveryFailed(
            "Discord pacing: no send slot within the sink timeout",
            permanent=False,
            retry_after_s=max(self._bucket.next_slot_s(), wait_s or 0.0),
            throttled=True,
        )

    async def deliver(self, event: Event) -> int | None:
        body = discord_message(event, self._username, self._link(event))
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        retried = False
        while True:
            await self._slot()
            response: Answer | None = None
            try:
                response = await self._client.post(
                    self._url, payload, _HEADERS, self.config.timeout_s
                )
            except TransportError as exc:
                raise DeliveryFailed(f"Discord: {exc.message}") from exc
            finally:
                self._follow_headers(response)  # the claimed slot is released either way
            status = response.status
            if 200 <= status < 300:
                return status
            if status != 429:
                raise DeliveryFailed(
                    f"Discord HTTP {status}: {_answer(response)}",
                    status=status,
                    permanent=True if status in (400, 401, 403, 404, 410) else None,
                )
            wait_s = retry_after(response)
            self._bucket.pause(wait_s)
            self._window.exhaust(wait_s)
            if retried or wait_s > self.config.timeout_s:
                raise DeliveryFailed(
                    f"Discord rate limited: {_answer(response)}", status=429, retry_after_s=wait_s
                )
            retried = True  # short enough: wait it out (in _slot) and send again, once

    def _follow_headers(self, response: Answer | None) -> None:
        """Hand ``X-RateLimit-Remaining`` / ``-Reset-After`` / ``-Limit`` to the
        webhook's window (nothing known when there was no answer)."""
        headers: Mapping[str, str] = response.headers if response is not None else {}
        self._window.release(
            _count(headers.get("x-ratelimit-remaining")),
            _seconds(headers.get("x-ratelimit-reset-after")),
            _count(headers.get("x-ratelimit-limit")),
        )

    async def aclose(self) -> None:
        return None
