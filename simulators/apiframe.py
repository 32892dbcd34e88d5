"""A faithful stand-in for Apiframe's legacy API (api.apiframe.pro).

Checks the raw key in ``Authorization`` (``Bearer <key>`` is accepted too, as the
2025 SDK sends it), validates bodies as the docs describe, answers with the documented
error bodies, posts progress then the final result to ``webhook_url`` with
``x-webhook-secret``, and serves ``POST /fetch``. Final results carry no ``status``
field and progress uses a string ``percentage``, as in the docs' examples.
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
    new_task_id,
    own_base_url,
    read_json_object,
    simulator_app,
)
from simulators.clock import WALL_CLOCK, Clock

DEFAULT_KEY = "sim-apiframe-key"


def _bad_request(message: str = "Invalid request") -> JSONResponse:
    return JSONResponse({"errors": [{"msg": message}]}, status_code=400)


def task_body(task: SimTask, phase: str) -> dict[str, Any]:
    """The task object as callbacks and ``/fetch`` show it."""
    base: dict[str, Any] = {"task_id": task.id, "task_type": task.extra["task_type"]}
    if phase == "progress":
        return {**base, "status": "processing", "percentage": str(task.progress)}
    outcome = task.outcome
    if outcome == "completed":
        return {**base, "image_url": task.image_url}
    message = (
        "Request cancelled due to image filters: banned prompt (moderation)"
        if outcome == "moderated"
        else "Midjourney job failed"
    )
    return {**base, "status": "failed", "message": message}


def create_app(api_key: str = DEFAULT_KEY, *, clock: Clock = WALL_CLOCK) -> Starlette:
    """The simulator as an ASGI app; ``app.state.book`` holds its tasks."""
    book = TaskBook()

    def callback_headers(task: SimTask, body: bytes) -> dict[str, str]:
        secret = task.extra.get("webhook_secret")
        return {"x-webhook-secret": secret} if secret else {}

    sender = CallbackSender(callback_headers)
    #: the raw key, or ``Bearer <key>`` as the 2025 SDK sends it
    keys = (api_key, f"Bearer {api_key}")

    async def submit(request: Request, task_type: str, body: dict[str, Any]) -> Response:
        parent = body.get("parent_task_id")
        if not isinstance(parent, str) or not parent:
            if not (task_type == "upscale-highres" and isinstance(body.get("image_url"), str)):
                return _bad_request("parent_task_id is required")
            parent = str(body["image_url"])
        webhook_url = body.get("webhook_url")
        secret = body.get("webhook_secret")
        if webhook_url is not None and not isinstance(webhook_url, str):
            return _bad_request("webhook_url must be a string")
        if secret is not None and not isinstance(secret, str):
            return _bad_request("webhook_secret must be a string")
        knobs = Knobs.from_parent(parent)
        if knobs.rate_limit:
            return JSONResponse({"errors": [{"msg": "Too many requests"}]}, status_code=429)
        book.submissions.append(body)
        task = book.add(
            SimTask(
                clock=clock,
                id=new_task_id(),
                parent_id=parent,
                action=task_type,
                knobs=knobs,
                image_base=own_base_url(request),
                callback_url=webhook_url,
                extra={"task_type": task_type, "webhook_secret": secret},
            )
        )
        sender.start(task, task_body)
        return JSONResponse({"task_id": task.id})

    async def upscale_1x(request: Request) -> Response:
        if not authorised(request, *keys):
            return JSONResponse({}, status_code=401)
        body = await read_json_object(request)
        if body is None:
            return _bad_request()
        index = body.get("index")
        if str(index) not in ("1", "2", "3", "4") or isinstance(index, bool):
            return _bad_request("index must be one of 1, 2, 3, 4")
        return await submit(request, f"upscale#{index}", body)

    async def upscale_alt(request: Request) -> Response:
        if not authorised(request, *keys):
            return JSONResponse({}, status_code=401)
        body = await read_json_object(request)
        if body is None:
            return _bad_request()
        if body.get("type") not in ("subtle", "creative"):
            return _bad_request("type must be subtle or creative")
        return await submit(request, f"upscale-{body['type']}", body)

    async def upscale_highres(request: Request) -> Response:
        if not authorised(request, *keys):
            return JSONResponse({}, status_code=401)
        body = await read_json_object(request)
        if body is None:
            return _bad_request()
        if body.get("type") not in ("2x", "4x"):
            return _bad_request("type must be 2x or 4x")
        return await submit(request, "upscale-highres", body)

    async def fetch(request: Request) -> Response:
        if not authorised(request, *keys):
            return JSONResponse({}, status_code=401)
        body = await read_json_object(request)
        task_id = body.get("task_id") if body else None
        if not isinstance(task_id, str):
            return _bad_request("task_id is required")
        task = book.polled(task_id)
        if task is None:
            return JSONResponse({"errors": [{"msg": "Task not found"}]}, status_code=404)
        return JSONResponse(task_body(task, "final" if task.finished else "progress"))

    return simulator_app(
        [
            Route("/upscale-1x", upscale_1x, methods=["POST"]),
            Route("/upscale-alt", upscale_alt, methods=["POST"]),
            Route("/upscale-highres", upscale_highres, methods=["POST"]),
            Route("/fetch", fetch, methods=["POST"]),
        ],
        book,
        sender,
    )
