"""``GET /v1/jobs`` and ``GET /v1/jobs/{job_id}``."""

from __future__ import annotations

from typing import Any

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
from receiver.store import DeliveryFilter


async def get_job(request: Request) -> Response:
    require_api_token(request)
    store = store_of(request)
    job_id = request.path_params["job_id"]
    job = await store.get_job(job_id) if sane_id(job_id) else None
    if job is None:
        raise NotFound("no such job")
    body = job.view(await store.list_events(job.id))
    deliveries = await store.list_deliveries(DeliveryFilter(job_id=job.id), limit=1000)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for delivery in sorted(deliveries, key=lambda d: (d.created_at, d.sink)):
        by_event.setdefault(delivery.event_id, []).append(
            {
                "id": delivery.id,
                "sink": delivery.sink,
                "state": delivery.state.value,
                "attempts": delivery.attempts,
                "last_status": delivery.last_status,
                "last_error": delivery.last_error,
            }
        )
    for event in body["events"]:
        event["deliveries"] = by_event.get(event["id"], [])
    return json_response(body)


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
