"""``POST /callbacks/{provider}/{token}`` and ``POST /callbacks/{provider}``."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.errors import RelayError
from receiver.ingest import Outcome, accept_account_callback, accept_job_callback
from receiver.routes.common import json_response, read_body, relay_of
from receiver.settings import DeliveryMode
from receiver.worker import DeliveryWorker

log = structlog.get_logger("relay.callbacks")


async def job_callback(request: Request) -> Response:
    relay = relay_of(request)
    provider = request.path_params["provider"]
    relay.provider(provider)  # 404 before anything else
    try:
        body = await read_body(request, relay.settings.max_body_bytes)
        outcome = await accept_job_callback(
            relay, provider, request.path_params["token"], request.headers, body
        )
    except RelayError as exc:
        relay.metrics.callbacks.labels(provider, exc.code).inc()
        log.info("callback.rejected", provider=provider, error=exc.code, status=exc.http_status)
        raise
    return await _answer(request, provider, outcome)


async def account_callback(request: Request) -> Response:
    relay = relay_of(request)
    provider = request.path_params["provider"]
    relay.provider(provider)
    try:
        body = await read_body(request, relay.settings.max_body_bytes)
        outcome = await accept_account_callback(relay, provider, request.headers, body)
    except RelayError as exc:
        relay.metrics.callbacks.labels(provider, exc.code).inc()
        log.info("callback.rejected", provider=provider, error=exc.code, status=exc.http_status)
        raise
    return await _answer(request, provider, outcome)


async def _answer(request: Request, provider: str, outcome: Outcome) -> Response:
    relay = relay_of(request)
    label = "duplicate" if outcome.duplicate else "accepted"
    relay.metrics.callbacks.labels(provider, label).inc()
    log.info(
        "callback." + label,
        provider=provider,
        event_id=outcome.event_id,
        awaiting_confirmation=outcome.awaiting_confirmation,
    )
    if relay.settings.delivery_mode is DeliveryMode.INLINE and not outcome.duplicate:
        worker: DeliveryWorker = request.state.inline_worker
        await worker.drain(relay.settings.inline_budget_s)
    return json_response({"ok": True, "event_id": outcome.event_id, "duplicate": outcome.duplicate})


routes = [
    Route("/callbacks/{provider}/{token}", job_callback, methods=["POST"]),
    Route("/callbacks/{provider}", account_callback, methods=["POST"]),
]
