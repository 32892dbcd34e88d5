"""``GET /v1/jobs`` and ``GET /v1/jobs/{job_id}``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.errors import BadRequest, NotFound
from receiver.events import JobStatus
from receiver.routes.common import (
    json_response,
    query_int,
    query_str,
    require_api_token,
    sane_id,
    store_of,
)


async def get_job(request: Request) -> Response:
    require_api_token(request)
    store = store_of(request)
    job_id = request.path_params["job_id"]
    job = await store.get_job(job_id) if sane_id(job_id) else None
    if job is None:
        raise NotFound("no such job")
    return json_response(job.view(await store.list_events(job.id)))


async def list_jobs(request: Request) -> Response:
    require_api_token(request)
    status_text = query_str(request, "status")
    try:
        status = JobStatus(status_text) if status_text else None
    except ValueError as exc:
        raise BadRequest(
            f"status must be one of {', '.join(s.value for s in JobStatus)}", field="status"
        ) from exc
    jobs = await store_of(request).list_jobs(
        ref=query_str(request, "ref"),
        status=status,
        provider=query_str(request, "provider"),
        limit=query_int(request, "limit", 100, 1000),
    )
    return json_response({"jobs": [job.view() for job in jobs]})


routes = [
    Route("/v1/jobs", list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
]
