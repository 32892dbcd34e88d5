"""A faithful stand-in for ImaginePro's API (api.imaginepro.ai).

Checks ``Authorization: Bearer <key>``; takes ``POST /api/v1/nova/button`` (and the
legacy ``/api/v1/midjourney/button`` and ``/api/v1/nova/boost/button``) with
``messageId``, ``button`` (an ImaginePro label, matched exactly), ``ref`` and
``webhookOverride``; answers ``{"success": true, "messageId", "createdAt"}``. Posts
the message object to ``webhookOverride`` (``PROCESSING``, then ``DONE`` or ``FAIL``)
and serves it at ``GET /api/v1/message/fetch/{messageId}`` (and the legacy
``/api/v1/midjourney/message/{messageId}``), ``QUEUED`` until the task starts. The
``ref`` received is echoed in every body.

Errors: validation failures answer the SDK's ``{"message", "error", "statusCode"}``
shape; a button the parent does not offer answers the documented
``{"success": false, "error"}``. Besides the shared knobs (``simulators.base``), a
parent id containing the word ``notfound`` is an unknown message (404).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import (
    CallbackSender,
    Knobs,
    SimTask,
    TaskBook,
    authorised,
    iso_now,
    new_task_id,
    own_base_url,
    parent_words,
    simulator_app,
)
from simulators.buttons import ARROWS, GRID, buttons_after
from simulators.clock import WALL_CLOCK, Clock

DEFAULT_KEY = "sim-imaginepro-key"

#: every button ImaginePro documents; "Redo Upscale (Subtle)/(Creative)" are not listed
LABELS: frozenset[str] = frozenset(
    {
        *GRID,
        *ARROWS,
        "Zoom Out 2x",
        "Zoom Out 1.5x",
        "Vary (Strong)",
        "Vary (Subtle)",
        "Vary (Region)",
        "Make Square",
        "Upscale (2x)",
        "Upscale (4x)",
        "Upscale (Subtle)",
        "Upscale (Creative)",
        "Redo Upscale (2x)",
        "Redo Upscale (4x)",
        "Cancel Job",
    }
)

PROMPT = "A little cat running on the grass"
_FAILURES = {
    "failed": "Job failed: Midjourney returned an error",
    "moderated": "Request cancelled due to image filters: banned prompt (moderation)",
    "cancelled": "Job cancelled",
}


def _error(status: int, message: str, error: str) -> JSONResponse:
    return JSONResponse(
        {"message": message, "error": error, "statusCode": status}, status_code=status
    )


def message_body(task: SimTask, phase: str) -> dict[str, Any]:
    """The message object as callbacks and fetch show it; ``phase`` is ``queued``,
    ``progress`` or ``final``."""
    body: dict[str, Any] = {
        "messageId": task.id,
        "prompt": PROMPT,
        "createdAt": task.extra["created_at"],
        "updatedAt": iso_now(),
        "originatingMessageId": task.parent_id,
        "ref": task.extra["ref"],
    }
    if phase == "queued":
        return {**body, "progress": 0, "status": "QUEUED"}
    if phase == "progress":
        return {**body, "progress": task.progress, "status": "PROCESSING"}
    outcome = task.outcome
    if outcome == "completed":
        return {
            **body,
            "originalUrl": task.image_url + "?source=discord",
            "uri": task.image_url,
            "progress": 100,
            "status": "DONE",
            "buttons": list(buttons_after(task.action)),
        }
    return {**body, "progress": 0, "status": "FAIL", "error": _FAILURES[outcome]}


def create_app(api_key: str = DEFAULT_KEY, *, clock: Clock = WALL_CLOCK) -> Starlette:
    """The simulator as an ASGI app; ``app.state.book`` holds its tasks."""
    book = TaskBook()
    sender = CallbackSender()
    bearer = f"Bearer {api_key}"

    async def button(request: Request) -> Response:
        if not authorised(request, bearer):
            return _error(401, "Unauthorized", "Unauthorized")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body must be JSON", "Bad Request")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object", "Bad Request")
        problems = [
            f"{key} should not be empty"
            for key in ("messageId", "button")
            if not isinstance(body.get(key), str) or not body[key]
        ]
        problems += [
            f"{key} must be a string"
            for key in ("ref", "webhookOverride")
            if body.get(key) is not None and not isinstance(body[key], str)
        ]
        if problems:
            return JSONResponse(
                {"message": problems, "error": "Bad Request", "statusCode": 400}, status_code=400
            )
        parent, label = body["messageId"], body["button"]
        if label not in LABELS:
            return _error(400, f"button must be one of: {', '.join(sorted(LABELS))}", "Bad Request")
        if "notfound" in parent_words(parent):
            return _error(404, f"message {parent} not found", "Not Found")
        knobs = Knobs.from_parent(parent)
        if knobs.rate_limit:
            return _error(429, "ThrottlerException: Too Many Requests", "Too Many Requests")
        known_parent = book.get(parent)
        if known_parent is not None and label not in buttons_after(known_parent.action):
            return JSONResponse(
                {"success": False, "error": f"Button {label} is not available on {parent}"},
                status_code=400,
            )
        book.submissions.append(body)
        task = book.add(
            SimTask(
                clock=clock,
                id=new_task_id(),
                parent_id=parent,
                action=label,
                knobs=knobs,
                image_base=own_base_url(request),
                callback_url=body.get("webhookOverride"),
                extra={"ref": body.get("ref") or "", "created_at": iso_now()},
            )
        )
        sender.start(task, message_body)
        return JSONResponse(
            {"success": True, "messageId": task.id, "createdAt": task.extra["created_at"]}
        )

    async def fetch(request: Request) -> Response:
        if not authorised(request, bearer):
            return _error(401, "Unauthorized", "Unauthorized")
        task = book.polled(request.path_params["message_id"])
        if task is None:
            return _error(404, "message not found", "Not Found")
        return JSONResponse(message_body(task, task.poll_phase(waiting="queued")))

    return simulator_app(
        [
            Route("/api/v1/nova/button", button, methods=["POST"]),
            Route("/api/v1/nova/boost/button", button, methods=["POST"]),
            Route("/api/v1/midjourney/button", button, methods=["POST"]),
            Route("/api/v1/message/fetch/{message_id}", fetch, methods=["GET"]),
            Route("/api/v1/midjourney/message/{message_id}", fetch, methods=["GET"]),
        ],
        book,
        sender,
    )
