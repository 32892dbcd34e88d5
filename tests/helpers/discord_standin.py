"""A stand-in for Discord's Execute Webhook endpoint that enforces Discord's rules.

``POST /api/webhooks/{id}/{token}``: the message limits (content 2,000; ≤ 10 embeds;
title 256, description 4,096, 25 fields of 256/1,024, footer 2,048, author 256, 6,000
characters in all; username 1 to 80 without "discord"/"clyde"), ``allowed_mentions``'
shape (and a record of the mentions a message would have pinged), a per-webhook rate
limit in fixed windows answered like Discord (``X-RateLimit-*`` headers on every
answer, 429 with JSON ``retry_after``), 404 ``Unknown Webhook`` (10015) for a deleted
or unknown webhook, and ``?wait=true`` answering 200 with the created message (204
without it). Bodies Discord would refuse get 400 ``Invalid Form Body`` (50035).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_MENTION = re.compile(r"@(everyone|here)|<@[!&]?\d+>")
_PARSE_TYPES = {"roles", "users", "everyone"}


def _text(value: Any, limit: int, *, required: bool = False) -> str | None:
    if value is None:
        return "is required" if required else None
    if not isinstance(value, str):
        return "must be a string"
    if required and not value.strip():
        return "must not be empty"
    return f"must be {limit} or fewer in length" if len(value) > limit else None


def _embed_problem(embed: Any) -> str | None:
    if not isinstance(embed, dict):
        return "embed must be an object"
    for key, limit in (("title", 256), ("description", 4096), ("url", 2048)):
        problem = _text(embed.get(key), limit)
        if problem:
            return f"embed.{key} {problem}"
    if "url" in embed and not str(embed["url"]).startswith(("http://", "https://")):
        return "embed.url must be an http(s) URL"
    color = embed.get("color")
    if color is not None and (not isinstance(color, int) or not 0 <= color <= 0xFFFFFF):
        return "embed.color must be an integer 0..0xFFFFFF"
    fields = embed.get("fields", [])
    if not isinstance(fields, list) or len(fields) > 25:
        return "embed.fields must be a list of at most 25"
    for item in fields:
        if not isinstance(item, dict):
            return "embed field must be an object"
        problem = _text(item.get("name"), 256, required=True) or _text(
            item.get("value"), 1024, required=True
        )
        if problem:
            return f"embed field {problem}"
    for key, inner, limit in (("footer", "text", 2048), ("author", "name", 256)):
        if key in embed:
            problem = _text((embed[key] or {}).get(inner), limit, required=True)
            if problem:
                return f"embed.{key}.{inner} {problem}"
    image = embed.get("image")
    image_url = str((image or {}).get("url", ""))
    if image is not None and (
        not image_url.startswith(("http://", "https://", "attachment://")) or len(image_url) > 2048
    ):
        return "embed.image.url must be a URL of at most 2048 characters"
    return None


def embed_chars(embed: dict[str, Any]) -> int:
    """What Discord counts toward the 6,000 characters of a message's embeds."""
    size = len(embed.get("title") or "") + len(embed.get("description") or "")
    size += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    size += len((embed.get("footer") or {}).get("text") or "")
    return size + len((embed.get("author") or {}).get("name") or "")


def _mentions_problem(allowed: Any) -> str | None:
    if allowed is None:
        return None
    if not isinstance(allowed, dict):
        return "allowed_mentions must be an object"
    parse = allowed.get("parse", [])
    if not isinstance(parse, list) or not set(parse) <= _PARSE_TYPES:
        return "allowed_mentions.parse must list roles, users or everyone"
    for kind in ("users", "roles"):
        if kind in parse and allowed.get(kind):
            return f"allowed_mentions: parse {kind} and {kind} are mutually exclusive"
    return None


def message_problem(body: Any) -> str | None:
    """Why Discord would answer 400 to ``body`` (None: it would not)."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    content, embeds = body.get("content"), body.get("embeds")
    if not content and not embeds:
        return "Cannot send an empty message"
    problem = _text(content, 2000)
    if problem:
        return f"content {problem}"
    if embeds is not None:
        if not isinstance(embeds, list) or len(embeds) > 10:
            return "embeds must be a list of at most 10"
        for embed in embeds:
            problem = _embed_problem(embed)
            if problem:
                return problem
        if sum(embed_chars(e) for e in embeds) > 6000:
            return "Embed size exceeds maximum size of 6000"
    username = body.get("username")
    if username is not None:
        problem = _text(username, 80, required=True)
        if problem:
            return f"username {problem}"
        if "discord" in username.lower() or "clyde" in username.lower():
            return "username cannot contain 'discord' or 'clyde'"
    return _mentions_problem(body.get("allowed_mentions"))


def pinged(body: dict[str, Any]) -> list[str]:
    """The mentions in ``body``'s content that Discord would turn into pings."""
    allowed = body.get("allowed_mentions")
    found = _MENTION.findall(body.get("content") or "")
    if allowed is None:
        return [m or "user" for m in found]  # Discord's default parses every mention
    parse = set(allowed.get("parse", []))
    return [m for m in found if m and "everyone" in parse]


@dataclass
class Webhook:
    """One webhook: its window, what it accepted and how often it said 429."""

    limit: int
    window_s: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    pings: list[str] = field(default_factory=list)
    rate_limited: int = 0
    deleted: bool = False
    window_start: float = -math.inf
    used: int = 0

    def take(self, now: float) -> tuple[bool, int, float]:
        """(allowed, remaining, reset_after) for a request at ``now``."""
        if now >= self.window_start + self.window_s:
            self.window_start, self.used = now, 0
        reset_after = self.window_start + self.window_s - now
        if self.used >= self.limit:
            return False, 0, reset_after
        self.used += 1
        return True, self.limit - self.used, reset_after


class DiscordStandin:
    """``add_hook()`` registers a webhook and returns its path; ``app()`` serves them."""

    def __init__(self) -> None:
        self.hooks: dict[str, Webhook] = {}

    def add_hook(self, limit: int = 5, window_s: float = 2.0) -> str:
        path = f"/api/webhooks/{secrets.randbelow(10**18) + 10**17}/{secrets.token_urlsafe(48)}"
        self.hooks[path] = Webhook(limit, window_s)
        return path

    def delete_hook(self, path: str) -> None:
        self.hooks[path].deleted = True

    async def _execute(self, request: Request) -> Response:
        hook = self.hooks.get(request.url.path)
        if hook is None or hook.deleted:
            return JSONResponse({"message": "Unknown Webhook", "code": 10015}, status_code=404)
        allowed, remaining, reset_after = hook.take(time.monotonic())
        headers = {
            "X-RateLimit-Limit": str(hook.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": "standin-webhook",
        }
        if not allowed:
            hook.rate_limited += 1
            headers["Retry-After"] = str(math.ceil(reset_after))
            headers["X-RateLimit-Scope"] = "shared"
            body = {"message": "You are being rate limited.", "retry_after": round(reset_after, 3)}
            return JSONResponse({**body, "global": False}, status_code=429, headers=headers)
        try:
            payload = json.loads(await request.body())
        except ValueError:
            payload = None
        problem = message_problem(payload)
        if problem:
            hook.refused.append(problem)
            error = {"message": "Invalid Form Body", "code": 50035, "errors": problem}
            return JSONResponse(error, status_code=400, headers=headers)
        hook.messages.append(payload)
        hook.accepted_at.append(time.monotonic())
        hook.pings.extend(pinged(payload))
        if request.query_params.get("wait", "").lower() != "true":
            return Response(status_code=204, headers=headers)
        message = {
            "id": str(secrets.randbelow(10**18) + 10**17),
            "type": 0,
            "channel_id": "1000000000000000001",
            "webhook_id": request.url.path.split("/")[3],
            "content": payload.get("content", ""),
            "embeds": payload.get("embeds", []),
            "mentions": [],
            "mention_everyone": False,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        }
        return JSONResponse(message, headers=headers)

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/api/webhooks/{id}/{token}", self._execute, methods=["POST"])]
        )
