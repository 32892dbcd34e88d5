"""A stand-in for Slack incoming webhooks: Block Kit validation, a per-webhook rate
limit answered with 429 + ``Retry-After: 1``, Slack's plain-text answers (``ok``,
``invalid_payload``, ``rate_limited``, ``no_service``)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

BLOCK_TYPES = {"header", "section", "image", "context", "divider", "actions"}
TEXT_TYPES = {"plain_text", "mrkdwn"}


def _text_ok(obj: Any, *, max_len: int, types: set[str] = TEXT_TYPES) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("type") in types
        and isinstance(obj.get("text"), str)
        and 0 < len(obj["text"]) <= max_len
    )


def _block_problem(block: Any) -> str | None:
    if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
        return "unknown block type"
    kind = block["type"]
    if kind == "header" and not _text_ok(block.get("text"), max_len=150, types={"plain_text"}):
        return "header needs plain_text of at most 150 characters"
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            return "section needs text or fields"
        if text is not None and not _text_ok(text, max_len=3000):
            return "bad section text"
        if fields is not None and (
            not isinstance(fields, list)
            or not 0 < len(fields) <= 10
            or not all(_text_ok(f, max_len=2000) for f in fields)
        ):
            return "section fields: 1 to 10 text objects of at most 2000 characters"
    if kind == "image":
        url, alt = block.get("image_url"), block.get("alt_text")
        if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            return "image needs image_url"
        if not (isinstance(alt, str) and 0 < len(alt) <= 2000):
            return "image needs alt_text"
    if kind in ("context", "actions"):
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            return f"{kind} needs elements"
    return None


def block_kit_problem(body: Any) -> str | None:
    """Why Slack would refuse ``body`` as a webhook message (None: it would not)."""
    if not isinstance(body, dict):
        return "body must be an object"
    text, blocks = body.get("text"), body.get("blocks")
    if not (isinstance(text, str) and text) and blocks is None:
        return "need text or blocks"
    if text is not None and not isinstance(text, str):
        return "text must be a string"
    if blocks is not None:
        if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
            return "blocks must be a list of 1 to 50 blocks"
        for block in blocks:
            problem = _block_problem(block)
            if problem:
                return problem
    return None


@dataclass
class Hook:
    """One webhook: its token bucket, what it accepted and how often it said 429. The
    bucket refills by ``clock`` (``time.monotonic``; a test may hold it still)."""

    rate_per_s: float
    burst: int
    fail_with: tuple[int, str] | None = None
    clock: Callable[[], float] = time.monotonic
    messages: list[dict[str, Any]] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)
    rate_limited: int = 0
    refused: list[str] = field(default_factory=list)
    tokens: float = 0.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.updated = self.clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SlackStandin:
    """``add_hook()`` registers ``/services/T…/B…/<token>``; POSTs elsewhere get 404
    ``no_service``. ``app()`` is the Starlette app."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}

    def add_hook(
        self,
        rate_per_s: float = 1.0,
        burst: int = 1,
        fail_with: tuple[int, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> str:
        """Register a webhook and return its path (the last segment is its secret)."""
        path = f"/services/T0RELAY/B{secrets.token_hex(4).upper()}/{secrets.token_urlsafe(18)}"
        self.hooks[path] = Hook(rate_per_s, burst, fail_with, clock)
        return path

    async def _post(self, request: Request) -> PlainTextResponse:
        hook = self.hooks.get(request.url.path)
        if hook is None:
            return PlainTextResponse("no_service", status_code=404)
        if hook.fail_with is not None:
            status, text = hook.fail_with
            return PlainTextResponse(text, status_code=status)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        problem = block_kit_problem(body)
        if problem:
            hook.refused.append(problem)
            return PlainTextResponse("invalid_payload", status_code=400)
        if not hook.take():
            hook.rate_limited += 1
            return PlainTextResponse("rate_limited", status_code=429, headers={"Retry-After": "1"})
        hook.messages.append(body)
        hook.accepted_at.append(hook.clock())
        return PlainTextResponse("ok")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._post, methods=["POST"])])
