"""A faithful stand-in for APIMart's Midjourney API (api.apimart.ai).

APIMart has no callbacks: clients poll. This fake checks ``Authorization: Bearer
<key>``, validates ``POST /v1/midjourney/generations/upscale`` as the docs describe
(``task_id`` required and SUCCESS, ``index`` an integer 1-4 or ``custom_id`` one of the
parent's upscale buttons; ``custom_id`` wins when both are sent) and answers
``{"code": 200, "data": [{"status": "submitted", "task_id"}]}``. It serves
``GET /v1/midjourney/{id}`` (MJ-style: ``SUBMITTED`` → ``IN_PROGRESS`` "40%" →
``SUCCESS`` with one ``image_urls`` entry, or ``FAILURE`` with ``fail_reason``) and
``GET /v1/tasks/{id}`` (unified: ``{"code", "data": {status, progress, result|error}}``).

A parent id it has not seen is an existing SUCCESS imagine task with four images and
the buttons U1-U4, V1-V4, 🔄 and the HD upscales (``Upscale (Subtle)`` … ``Redo Upscale
(Creative)``, customIds like ``MJ::JOB::upsample_v7_2x_subtle::1::<hash>``).

The error body shape is undocumented; this fake answers ``{"code": <status>, "error":
{"message", "type"}}`` [I]. Knob words of its own, besides those of ``simulators.base``:

==============  ===========================================================
``nohd``        the seeded parent offers only U1-U4, V1-V4 and 🔄
``notready``    the seeded parent is still IN_PROGRESS (upscales get a 400)
``expired``     the parent is unknown (404, as after APIMart's 3-day retention)
``nocredits``   the submit answers 402
``urlstring``   ``/v1/tasks/{id}`` gives ``result.images[].url`` as a string
==============  ===========================================================
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.base import (
    Knobs,
    SimTask,
    TaskBook,
    authorised,
    own_base_url,
    parent_words,
    simulator_app,
)
from simulators.clock import WALL_CLOCK, Clock

DEFAULT_KEY = "sim-apimart-key"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RETENTION_S = 3 * 24 * 3600

#: label -> customId command, as APIMart shows them on an image [I for the Redo names]
HD_COMMANDS: dict[str, str] = {
    "Upscale (Subtle)": "upsample_v7_2x_subtle",
    "Upscale (Creative)": "upsample_v7_2x_creative",
    "Upscale (2x)": "upsample_v5_2x",
    "Upscale (4x)": "upsample_v5_4x",
    "Redo Upscale (Subtle)": "upsample_v7_2x_subtle_redo",
    "Redo Upscale (Creative)": "upsample_v7_2x_creative_redo",
    "Redo Upscale (2x)": "upsample_v5_2x_redo",
    "Redo Upscale (4x)": "upsample_v5_4x_redo",
}
_FAIL_REASONS = {
    "failed": "Midjourney job failed: internal error",
    "moderated": "Banned prompt: the image was rejected by content moderation",
    "cancelled": "task cancelled",
}
_UNIFIED_STATUS = {
    "SUBMITTED": "pending",
    "IN_PROGRESS": "processing",
    "SUCCESS": "completed",
    "FAILURE": "failed",
}


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(
        {"code": status, "error": {"message": message, "type": kind}}, status_code=status
    )


def new_task_id() -> str:
    return "task_01" + "".join(secrets.choice(_CROCKFORD) for _ in range(24))


def grid_buttons(task_id: str, *, hd: bool) -> list[dict[str, str]]:
    """The buttons of an imagine task."""
    tag = hashlib.sha256(task_id.encode()).hexdigest()[:12]
    buttons = [
        {"customId": f"MJ::JOB::upsample::{n}::{tag}", "label": f"U{n}"} for n in range(1, 5)
    ]
    buttons += [
        {"customId": f"MJ::JOB::variation::{n}::{tag}", "label": f"V{n}"} for n in range(1, 5)
    ]
    buttons.append({"customId": f"MJ::JOB::reroll::0::{tag}::SOLO", "label": "🔄"})
    if hd:
        buttons += [
            {"customId": f"MJ::JOB::{command}::1::{tag}", "label": label}
            for label, command in HD_COMMANDS.items()
        ]
    return buttons


def upscale_buttons(task: SimTask) -> list[dict[str, str]]:
    """The buttons of a finished upscale: the HD upscales (redo ones after an HD
    upscale) and the variations."""
    tag = hashlib.sha256(task.id.encode()).hexdigest()[:12]
    redo = task.extra.get("custom_id") is not None
    buttons = [
        {"customId": f"MJ::JOB::{command}::1::{tag}", "label": label}
        for label, command in HD_COMMANDS.items()
        if label.startswith("Redo") == redo
    ]
    buttons += [
        {"customId": f"MJ::JOB::low_variation::1::{tag}::SOLO", "label": "Vary (Subtle)"},
        {"customId": f"MJ::JOB::high_variation::1::{tag}::SOLO", "label": "Vary (Strong)"},
    ]
    return buttons


def mj_status(task: SimTask) -> tuple[str, str]:
    """(status, progress) of a task as the MJ-style endpoint shows it."""
    if task.extra["kind"] == "imagine":
        return task.extra["status"], "100%" if task.extra["status"] == "SUCCESS" else "50%"
    if task.finished:
        if task.outcome == "completed":
            return "SUCCESS", "100%"
        return "FAILURE", "0%"
    if task.elapsed_s < task.knobs.delay_s:
        return "SUBMITTED", "0%"
    return "IN_PROGRESS", "40%"


def mj_body(task: SimTask) -> dict[str, Any]:
    """``GET /v1/midjourney/{id}``."""
    status, progress = mj_status(task)
    body: dict[str, Any] = {
        "id": task.id,
        "status": status,
        "action": "IMAGINE" if task.extra["kind"] == "imagine" else "UPSCALE",
        "progress": progress,
        "prompt": "a beautiful sunset over mountains",
    }
    if status == "SUCCESS":
        if task.extra["kind"] == "imagine":
            body["grid_image_url"] = task.image_url
            body["image_urls"] = [f"{task.image_base}/images/{task.id}_{n}.png" for n in range(4)]
            body["buttons"] = task.extra["buttons"]
        else:
            body["image_urls"] = [task.image_url]
            body["buttons"] = upscale_buttons(task)
    elif status == "FAILURE":
        body["fail_reason"] = _FAIL_REASONS[task.outcome]
    return body


def unified_body(task: SimTask) -> dict[str, Any]:
    """``GET /v1/tasks/{id}``."""
    mj = mj_body(task)
    status = _UNIFIED_STATUS[mj["status"]]
    if status == "failed" and task.outcome == "cancelled":
        status = "cancelled"
    created = int(task.wall_time(task.created_at))
    data: dict[str, Any] = {
        "id": task.id,
        "status": status,
        "progress": int(mj["progress"].rstrip("%")),
        "created": created,
        "estimated_time": 60,
    }
    if status == "completed":
        urls = mj["image_urls"]
        url: Any = urls[0] if "urlstring" in task.extra["words"] else urls
        data["result"] = {"images": [{"url": url, "expires_at": created + _RETENTION_S}]}
        data["completed"] = created + 1
        data["actual_time"] = 1
    elif status in ("failed", "cancelled"):
        data["error"] = {
            "code": "moderated" if task.outcome == "moderated" else "task_failed",
            "message": mj["fail_reason"],
            "type": "task_error",
        }
    return {"code": 200, "data": data}


def create_app(api_key: str = DEFAULT_KEY, *, clock: Clock = WALL_CLOCK) -> Starlette:
    """The simulator as an ASGI app; ``app.state.book`` holds its tasks."""
    book = TaskBook()

    bearer = f"Bearer {api_key}"

    def find_or_seed(task_id: str, request: Request) -> SimTask | None:
        """A known task, or an imagine task seeded for an unseen id."""
        task = book.get(task_id)
        if task is not None:
            return task
        words = parent_words(task_id)
        if "expired" in words:
            return None
        return book.add(
            SimTask(
                clock=clock,
                id=task_id,
                parent_id="",
                action="IMAGINE",
                knobs=Knobs(),
                image_base=own_base_url(request),
                extra={
                    "kind": "imagine",
                    "words": words,
                    "status": "IN_PROGRESS" if "notready" in words else "SUCCESS",
                    "buttons": grid_buttons(task_id, hd="nohd" not in words),
                },
            )
        )

    async def upscale(request: Request) -> Response:
        if not authorised(request, bearer):
            return _error(401, "Invalid API key", "authentication_error")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        parent_id = body.get("task_id")
        words = parent_words(parent_id) if isinstance(parent_id, str) else set()
        knobs = Knobs.from_parent(parent_id) if isinstance(parent_id, str) else Knobs()
        if knobs.rate_limit:
            return _error(429, "too many requests", "rate_limit_error")
        index = body.get("index")
        custom_id = body.get("custom_id")
        if not isinstance(parent_id, str) or not parent_id:
            return _error(400, "task_id is required")
        if custom_id is not None and (not isinstance(custom_id, str) or not custom_id):
            return _error(400, "custom_id must be a non-empty string")
        if custom_id is None and (
            isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 4
        ):
            return _error(400, "index out of range: must be an integer from 1 to 4")
        parent = find_or_seed(parent_id, request)
        if parent is None:
            return _error(404, "task not found", "not_found")
        status, _progress = mj_status(parent)
        if status != "SUCCESS":
            return _error(400, "task is not in SUCCESS state")
        if "nocredits" in words:
            return _error(402, "insufficient quota", "insufficient_quota")
        if custom_id is not None:
            offered = {b["customId"] for b in mj_body(parent).get("buttons", [])}
            if custom_id not in offered or "::upsample" not in custom_id:
                return _error(400, "custom_id is not an upscale button of this task")
        elif parent.extra["kind"] != "imagine":
            return _error(400, "invalid image generation request")
        book.submissions.append(body)
        task = book.add(
            SimTask(
                clock=clock,
                id=new_task_id(),
                parent_id=parent_id,
                action="UPSCALE",
                knobs=knobs,
                image_base=own_base_url(request),
                extra={"kind": "upscale", "words": words, "custom_id": custom_id, "index": index},
            )
        )
        return JSONResponse({"code": 200, "data": [{"status": "submitted", "task_id": task.id}]})

    async def midjourney_task(request: Request) -> Response:
        if not authorised(request, bearer):
            return _error(401, "Invalid API key", "authentication_error")
        task = find_or_seed(request.path_params["task_id"], request)
        if task is None:
            return _error(404, "task not found", "not_found")
        book.polls[task.id] += 1
        return JSONResponse(mj_body(task))

    async def unified_task(request: Request) -> Response:
        if not authorised(request, bearer):
            return _error(401, "Invalid API key", "authentication_error")
        task = book.polled(request.path_params["task_id"])
        if task is None:
            return _error(404, "task not found", "not_found")
        return JSONResponse(unified_body(task))

    return simulator_app(
        [
            Route("/v1/midjourney/generations/upscale", upscale, methods=["POST"]),
            Route("/v1/midjourney/{task_id}", midjourney_task, methods=["GET"]),
            Route("/v1/tasks/{task_id}", unified_task, methods=["GET"]),
        ],
        book,
    )
