"""``POST /v1/upscales``: submit an upscale (honours ``Idempotency-Key``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.errors import BadRequest
from receiver.events import JobStatus
from receiver.routes.common import (
    clean_text,
    json_response,
    read_json,
    require_api_token,
    submitter_of,
)


async def create_upscale(request: Request) -> Response:
    require_api_token(request)
    submitter = submitter_of(request)
    body = await read_json(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255 and key.isprintable()):
        raise BadRequest("Idempotency-Key must be 1-255 printable characters")
    if isinstance(body, dict):
        for name in ("provider", "parent_id", "action", "ref"):
            if isinstance(body.get(name), str):
                clean_text(body[name], name)
    job, created = await submitter.submit(submitter.parse(body), key)
    answer = {
        "job_id": job.id,
        "provider": job.provider,
        "provider_task_id": job.provider_task_id,
        # the submission's outcome; a fast provider may already have called back
        "status": "queued" if job.status is JobStatus.QUEUED else "submitted",
        "callback": job.callback_mode.value,
        "action": job.action,
        "ref": job.ref,
    }
    response = json_response(answer, status_code=202)
    if not created:
        response.headers["idempotent-replayed"] = "true"
    return response


routes = [Route("/v1/upscales", create_upscale, methods=["POST"])]
