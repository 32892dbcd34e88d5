"""``/healthz`` (alive), ``/readyz`` (the store answers) and ``/metrics``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.routes.common import json_response, metrics_of, store_of


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await store_of(request).ping()
    except Exception:
        return json_response({"status": "unavailable", "store": "down"}, status_code=503)
    return json_response({"status": "ok", "store": "up"})


async def metrics(request: Request) -> Response:
    body, content_type = metrics_of(request).render()
    return Response(body, media_type=content_type)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
