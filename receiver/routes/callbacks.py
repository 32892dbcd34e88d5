"""``POST /callbacks/{provider}/{token}`` and ``POST /callbacks/{provider}``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers.providers import Provider
from receiver.errors import RelayError
from receiver.ingest import Outcome
from receiver.logs import request_line
from receiver.routes.common import (
    ingestor_of,
    json_response,
    metrics_of,
    read_body,
    settings_of,
    worker_of,
)
from receiver.settings import DeliveryMode

log = structlog.get_logger("relay.callbacks")

Accept = Callable[[Provider, bytes], Awaitable[Outcome]]


async def job_callback(request: Request) -> Response:
    ingestor = ingestor_of(request)
    token = request.path_params["token"]

    def accept(provider: Provider, body: bytes) -> Awaitable[Outcome]:
        return ingestor.job_callback(provider, token, request.headers, body)

    return await _callback(request, accept)


async def account_callback(request: Request) -> Response:
    ingestor = ingestor_of(request)

    def accept(provider: Provider, body: bytes) -> Awaitable[Outcome]:
        return ingestor.account_callback(provider, request.headers, body)

    return await _callback(request, accept)


async def _callback(request: Request, accept: Accept) -> Response:
    """Look the provider up (404 before anything else), read the body, ``accept`` it;
    count and log a rejection, then let the error handler answer it."""
    settings = settings_of(request)
    metrics = metrics_of(request)
    name = request.path_params["provider"]
    provider = ingestor_of(request).provider(name)
    started = time.perf_counter()
    try:
        body = await read_body(request, settings.max_body_bytes)
        outcome = await accept(provider, body)
    except RelayError as exc:
        metrics.callbacks.labels(name, exc.code).inc()
        log.info(
            "callback.rejected", **request_line(exc.http_status), provider=name, error=exc.code
        )
        raise
    finally:  # a configured provider only (a 404 above never gets here): bounded labels
        metrics.callback_seconds.labels(name).observe(time.perf_counter() - started)
    label = "duplicate" if outcome.duplicate else "accepted"
    metrics.callbacks.labels(name, label).inc()
    # the request's one log line (the middleware writes none for it)
    log.info(
        "callback." + label,
        **request_line(200),
        provider=name,
        event_id=outcome.event_id,
        type=outcome.type,
        job_id=outcome.job_id,
        sinks=outcome.sinks,
        awaiting_confirmation=outcome.awaiting_confirmation,
    )
    inline = worker_of(request, "inline_worker")
    if settings.delivery_mode is DeliveryMode.INLINE and inline and not outcome.duplicate:
        await inline.drain(settings.inline_budget_s)
    return json_response({"ok": True, "event_id": outcome.event_id, "duplicate": outcome.duplicate})


routes = [
    Route("/callbacks/{provider}/{token}", job_callback, methods=["POST"]),
    Route("/callbacks/{provider}", account_callback, methods=["POST"]),
]
