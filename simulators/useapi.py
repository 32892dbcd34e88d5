"""A faithful stand-in for useapi.net's Midjourney API v2 (api.useapi.net).

Checks ``Authorization: Bearer <key>``; takes ``POST /v2/jobs/button`` with ``jobid``,
``button`` (useapi's enum), ``replyUrl``, ``replyRef`` and ``maxJobs`` (default 3) and
answers with the job record (``status: started``). Posts the job record to
``replyUrl`` (``progress`` with the percentage in ``content``, then ``completed``,
``failed``, ``moderated`` or ``cancelled``) and serves it at
``GET /v2/jobs/?jobid=``. The ``replyRef`` received is echoed in every body.

Errors use the documented bodies (PROVIDERS.md §4): 400 (missing or unknown fields, a
button the parent does not offer), 401, 409 when a U-button is pressed again on the
same parent (naming the first job), 429 when ``maxJobs`` jobs are already running
(``app.state.book.peak_running`` records the most ever running at once) or for the
``ratelimit`` knob (Discord's 429). Besides the shared knobs (``simulators.base``),
words in the parent id select the other documented answers: ``notfound`` (404),
``nosub`` (402), ``blocked`` (422 moderated), ``queued`` (504).
"""

from __future__ import annotations

import json
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
    read_json_object,
    simulator_app,
)
from simulators.buttons import ARROWS, GRID, buttons_after
from simulators.clock import WALL_CLOCK, Clock

DEFAULT_KEY = "sim-useapi-key"
DEFAULT_MAX_JOBS = 3

#: useapi's documented ``button`` enum
LABELS: frozenset[str] = frozenset(
    {
        *GRID,
        *ARROWS,
        "Vary (Strong)",
        "Vary (Subtle)",
        "Zoom Out 1.5x",
        "Zoom Out 2x",
        "Make Square",
        "Upscale (2x)",
        "Upscale (4x)",
        "Upscale (Subtle)",
        "Upscale (Creative)",
        "Redo Upscale (2x)",
        "Redo Upscale (4x)",
        "Redo Upscale (Subtle)",
        "Redo Upscale (Creative)",
        "Make Variations",
        "Remaster",
        "Custom Zoom",
        "Animate (High motion)",
        "Animate (Low motion)",
        "Extend (High motion)",
        "Extend (Low motion)",
    }
)
U_BUTTONS = frozenset({"U1", "U2", "U3", "U4"})

PROMPT = "a cat"
MODERATED_DETAILS = (
    "Sorry! Our AI moderators feel your prompt might be against our community standards."
)
_FAILURES: dict[str, dict[str, str]] = {
    "failed": {"error": "Job timed out"},
    "moderated": {"error": "Action needed to continue", "errorDetails": MODERATED_DETAILS},
    "cancelled": {"error": "Job cancelled"},
}


class UseapiBook(TaskBook):
    """The task book plus how many jobs ran at once: ``peak_running`` is the most ever
    running together, ``refused`` counts submits answered with the maxJobs 429."""

    def __init__(self) -> None:
        super().__init__()
        self.peak_running = 0
        self.refused = 0


def _error(http_status: int, error: str, /, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, **extra, "code": http_status}, status_code=http_status)


def job_body(task: SimTask, phase: str) -> dict[str, Any]:
    """The job record as the submit answer, callbacks and polls show it; ``phase`` is
    ``started``, ``progress`` or ``final``."""
    index = task.action[1] if task.action in U_BUTTONS else "1"
    body: dict[str, Any] = {
        "jobid": task.id,
        "verb": "button",
        "created": task.extra["created"],
        "updated": iso_now(),
        "button": task.action,
        "parentJobId": task.parent_id,
        "channel": "sim-channel",
        "server": "sim-server",
        "maxJobs": task.extra["max_jobs"],
        "replyRef": task.extra["reply_ref"],
        "messageId": f"msg-{task.id}",
        "timestamp": task.extra["created"],
        "code": 200,
    }
    if task.callback_url:
        body["replyUrl"] = task.callback_url
    if phase == "started":
        return {**body, "status": "started", "content": f"**{PROMPT}** - Waiting to start"}
    if phase == "progress":
        content = f"**{PROMPT}** - Upscaling image #{index} ({task.progress}%) (fast)"
        return {**body, "status": "progress", "content": content}
    outcome = task.outcome
    if outcome != "completed":
        return {**body, "status": outcome, **_FAILURES[outcome]}
    attachment = {
        "id": task.id,
        "url": task.image_url,
        "proxy_url": task.image_url + "?proxy=1",
        "filename": f"{task.id}.png",
        "content_type": "image/png",
        "size": 1024,
        "width": 16,
        "height": 16,
    }
    return {
        **body,
        "status": "completed",
        "content": f"**{PROMPT}** - Image #{index} <@sim>",
        "buttons": list(buttons_after(task.action)),
        "attachments": [attachment],
    }


def _validate(body: dict[str, Any]) -> str | None:
    """The documented 400 ``error`` text for a bad button body, or None."""
    for key in ("jobid", "button"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"{key} is missing"
    if body["button"] not in LABELS:
        return f"button {body['button']} not supported"
    if body["button"] == "Custom Zoom" and not body.get("prompt"):
        return "prompt is missing"
    for key in ("replyUrl", "replyRef"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} must be a string"
        if isinstance(value, str) and len(value) > 1024:
            return f"{key} is too long"
    max_jobs = body.get("maxJobs", DEFAULT_MAX_JOBS)
    if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or not 1 <= max_jobs <= 15:
        return "maxJobs must be an integer between 1 and 15"
    return None


def create_app(api_key: str = DEFAULT_KEY, *, clock: Clock = WALL_CLOCK) -> Starlette:
    """The simulator as an ASGI app; ``app.state.book`` holds its jobs and the peak of
    jobs running at once (``book.peak_running``)."""
    book = UseapiBook()
    sender = CallbackSender()
    #: (parent jobid, U-button) -> the job that ran it
    pressed: dict[tuple[str, str], str] = {}
    bearer = f"Bearer {api_key}"

    def running() -> list[str]:
        return [task.id for task in book.tasks.values() if not task.finished]

    async def button(request: Request) -> Response:
        if not authorised(request, bearer):
            return _error(401, "Unauthorized")
        body = await read_json_object(request)
        if body is None:
            return _error(400, "jobid is missing")
        problem = _validate(body)
        if problem:
            return _error(400, problem)
        parent, label = body["jobid"], body["button"]
        words = parent_words(parent)
        if "nosub" in words:
            return _error(402, "Account has no subscription or subscription expired")
        known_parent = book.get(parent)
        if "notfound" in words:
            return _error(404, f"Unable to locate job {parent}")
        if known_parent is not None:
            offered = buttons_after(known_parent.action)
            if not known_parent.finished or known_parent.outcome != "completed":
                return _error(400, f"job {parent} is not completed")
            if label not in offered:
                return _error(
                    400, f"button {label} not found in job {parent} buttons {json.dumps(offered)}"
                )
        first = pressed.get((parent, label))
        if first is not None:
            return _error(
                409, f"Button {label} already executed by job {first}", button=label, jobid=first
            )
        knobs = Knobs.from_parent(parent)
        if knobs.rate_limit:
            details = {"global": True, "message": "You are being rate limited.", "retry_after": 10}
            return _error(
                429,
                "Discord /interactions failed with HTTP status 429",
                errorDetails=json.dumps(details),
            )
        if "blocked" in words:
            return _error(
                422,
                "Action needed to continue",
                errorDetails=MODERATED_DETAILS,
                jobid=new_task_id(),
                status="moderated",
            )
        if "queued" in words:
            return _error(504, "Job queued", jobid=new_task_id(), status="failed")
        max_jobs = body.get("maxJobs", DEFAULT_MAX_JOBS)
        executing = running()
        if len(executing) >= max_jobs:
            book.refused += 1
            return _error(
                429,
                f"Maximum of {max_jobs} jobs executing in parallel supported",
                executingJobs=executing,
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
                callback_url=body.get("replyUrl"),
                extra={
                    "reply_ref": body.get("replyRef"),
                    "max_jobs": max_jobs,
                    "created": iso_now(),
                },
            )
        )
        book.peak_running = max(book.peak_running, len(executing) + 1)
        if label in U_BUTTONS:
            pressed[(parent, label)] = task.id
        sender.start(task, job_body)
        return JSONResponse(job_body(task, "started"))

    async def job(request: Request) -> Response:
        if not authorised(request, bearer):
            return _error(401, "Unauthorized")
        job_id = request.query_params.get("jobid")
        if not job_id:
            return _error(400, "jobid is missing")
        task = book.polled(job_id)
        if task is None:
            return _error(404, f"Unable to locate job {job_id}")
        return JSONResponse(job_body(task, task.poll_phase(waiting="started")))

    return simulator_app(
        [
            Route("/v2/jobs/button", button, methods=["POST"]),
            Route("/v2/jobs/", job, methods=["GET"]),
            Route("/v2/jobs", job, methods=["GET"]),
        ],
        book,
        sender,
    )
