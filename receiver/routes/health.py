"""``/healthz`` (alive), ``/readyz`` (the store answers) and ``/metrics``."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.events import utcnow
from receiver.routes.common import json_response, metrics_of, settings_of, store_of

log = structlog.get_logger("relay.metrics")


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await store_of(request).ping()
    except Exception:
        return json_response({"status": "unavailable", "store": "down"}, status_code=503)
    return json_response({"status": "ok", "store": "up"})


async def metrics(request: Request) -> Response:
    metrics = metrics_of(request)
    try:
        await metrics.refresh(store_of(request), settings_of(request).sinks, utcnow())
    except Exception:  # the store is down: still serve this process's own counters
        log.warning("metrics.store_unavailable", exc_info=True)
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
