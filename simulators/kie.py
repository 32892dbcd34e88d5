"""A faithful stand-in for Kie.ai's Midjourney API (api.kie.ai).

Checks ``Authorization: Bearer <key>`` and the upscale body as the docs describe
(``taskId`` required, ``imageIndex`` an integer 0-3, ``waterMark`` a string,
``callBackUrl`` an http(s) URL) and answers every error in the ``{code, msg, data}``
envelope with HTTP 200 (the docs do not say the HTTP status mirrors ``code``). Posts ONE
terminal callback per task (no progress posts), signed with ``X-Webhook-Timestamp`` /
``X-Webhook-Signature`` when an HMAC key is set (``create_app(key, hmac_key=...)`` or
``app.state.hmac_key = ...``), and serves ``GET /api/v1/mj/record-info`` with
``successFlag`` and ``resultInfoJson.resultUrls[{resultUrl}]``.

Knob words of its own, besides those of ``simulators.base``:

==============  ===========================================================
``nocredits``   the submit answers code 402 (insufficient credits)
``maintenance`` the submit answers code 455 (service under maintenance)
``featureoff``  the submit answers code 505 (feature disabled)
``genfail``     the submit answers code 501 (generation failed)
``tamper``      the callback's ``resultUrls`` differ from what record-info says
``badsig``      the callback is signed with the wrong key
``stalesig``    the callback's timestamp is ten minutes old
==============  ===========================================================

``fail`` ends with ``successFlag`` 2, ``cancel`` with 3 ("created but generation
failed"), ``moderate`` with 2 and a moderation message; their callbacks carry code 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
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
    own_base_url,
    parent_words,
    simulator_app,
)
from simulators.clock import WALL_CLOCK, Clock

DEFAULT_KEY = "sim-kie-key"

_SUBMIT_KNOBS: dict[str, tuple[int, str]] = {
    "nocredits": (402, "Insufficient credits"),
    "maintenance": (455, "Service unavailable: system maintenance"),
    "featureoff": (505, "This feature is currently disabled"),
    "genfail": (501, "Generation failed"),
}
_FAILURE_MESSAGES = {
    "failed": "Image generation failed",
    "cancelled": "Task created but generation failed",
    "moderated": "Image generation failed: prompt flagged by content moderation (sensitive)",
}


def _answer(code: int, msg: str, data: Any = None) -> JSONResponse:
    """Kie's envelope, always with HTTP 200."""
    return JSONResponse({"code": code, "msg": msg, "data": data})


def _iso(task: SimTask, at: float) -> str:
    """``at`` on the task's clock as Kie's UTC timestamp text."""
    return datetime.fromtimestamp(task.wall_time(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(key: str, task_id: str, timestamp: str) -> str:
    """``X-Webhook-Signature``: base64 HMAC-SHA256(key, ``taskId + "." + timestamp``)."""
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _result_url(task: SimTask, *, tampered: bool = False) -> str:
    if tampered:
        return f"{task.image_base}/images/{task.id}-tampered.png"
    return task.image_url


def callback_body(task: SimTask, phase: str) -> dict[str, Any]:
    """The terminal callback (Kie sends no progress posts, so ``phase`` is ``final``)."""
    data: dict[str, Any] = {"taskId": task.id, "promptJson": task.extra["param_json"]}
    if task.outcome == "completed":
        tampered = "tamper" in task.extra["words"]
        data["resultUrls"] = [_result_url(task, tampered=tampered)]
        return {"code": 200, "msg": "success", "data": data}
    data["resultUrls"] = []
    return {"code": 500, "msg": _FAILURE_MESSAGES[task.outcome], "data": data}


def record_info(task: SimTask) -> dict[str, Any]:
    """``data`` of ``record-info`` for one task."""
    data: dict[str, Any] = {
        "taskId": task.id,
        "taskType": "mj_upscale",
        "paramJson": task.extra["param_json"],
        "completeTime": None,
        "resultInfoJson": None,
        "successFlag": 0,
        "createTime": _iso(task, task.created_at),
        "errorCode": None,
        "errorMessage": None,
    }
    if not task.finished:
        return data
    data["completeTime"] = _iso(task, task.finishes_at)
    outcome = task.outcome
    if outcome == "completed":
        data["successFlag"] = 1
        data["resultInfoJson"] = {"resultUrls": [{"resultUrl": _result_url(task)}]}
    else:
        data["successFlag"] = 3 if outcome == "cancelled" else 2
        data["errorCode"] = 500
        data["errorMessage"] = _FAILURE_MESSAGES[outcome]
    return data


def create_app(
    api_key: str = DEFAULT_KEY, *, hmac_key: str | None = None, clock: Clock = WALL_CLOCK
) -> Starlette:
    """The simulator as an ASGI app; ``app.state.book`` holds its tasks and
    ``app.state.hmac_key`` (settable later) signs its callbacks; task timing reads
    ``clock``."""
    book = TaskBook()

    def callback_headers(task: SimTask, body: bytes) -> dict[str, str]:
        key: str | None = app.state.hmac_key
        if not key:
            return {}
        words = task.extra["words"]
        stamp = int(time.time()) - (600 if "stalesig" in words else 0)
        signing_key = key + "-wrong" if "badsig" in words else key
        return {
            "X-Webhook-Timestamp": str(stamp),
            "X-Webhook-Signature": sign(signing_key, task.id, str(stamp)),
        }

    sender = CallbackSender(callback_headers)

    bearer = f"Bearer {api_key}"

    async def generate_upscale(request: Request) -> Response:
        if not authorised(request, bearer):
            return _answer(401, "You do not have access permissions")
        try:
            body = await request.json()
        except ValueError:
            return _answer(400, "Request body is not valid JSON")
        if not isinstance(body, dict):
            return _answer(400, "Request body must be a JSON object")
        parent = body.get("taskId")
        index = body.get("imageIndex")
        water_mark = body.get("waterMark", "")
        callback_url = body.get("callBackUrl")
        if not isinstance(parent, str) or not parent:
            return _answer(422, "taskId is required")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 3:
            return _answer(422, "imageIndex must be an integer from 0 to 3")
        if not isinstance(water_mark, str):
            return _answer(422, "waterMark must be a string")
        if callback_url is not None and not (
            isinstance(callback_url, str) and callback_url.startswith(("http://", "https://"))
        ):
            return _answer(422, "callBackUrl must be an http(s) URL")
        words = parent_words(parent)
        knobs = Knobs.from_parent(parent)
        if knobs.rate_limit:
            return _answer(429, "Rate limited: too many requests")
        for word, (code, msg) in _SUBMIT_KNOBS.items():
            if word in words:
                return _answer(code, msg)
        book.submissions.append(body)
        params = {"taskId": parent, "imageIndex": index, "waterMark": water_mark}
        if callback_url:
            params["callBackUrl"] = callback_url
        task = book.add(
            SimTask(
                clock=clock,
                id=uuid.uuid4().hex,
                parent_id=parent,
                action=f"upscale#{index}",
                knobs=knobs,
                image_base=own_base_url(request),
                callback_url=callback_url,
                extra={"words": words, "param_json": json.dumps(params)},
            )
        )
        sender.start(task, callback_body, progress_posts=False)
        return _answer(200, "success", {"taskId": task.id})

    async def get_record_info(request: Request) -> Response:
        if not authorised(request, bearer):
            return _answer(401, "You do not have access permissions")
        task_id = request.query_params.get("taskId", "")
        if not task_id:
            return _answer(422, "taskId is required")
        task = book.polled(task_id)
        if task is None:
            return _answer(404, "Task not found")
        return _answer(200, "success", record_info(task))

    app = simulator_app(
        [
            Route("/api/v1/mj/generateUpscale", generate_upscale, methods=["POST"]),
            Route("/api/v1/mj/record-info", get_record_info, methods=["GET"]),
        ],
        book,
        sender,
    )
    app.state.hmac_key = hmac_key
    return app
