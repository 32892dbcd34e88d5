"""Deliveries and sinks: list, replay one or many, and each sink's state."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.errors import BadRequest, NotFound
from receiver.events import DeliveryState, utcnow
from receiver.jsonbody import decode_json
from receiver.routes.common import (
    clean_text,
    json_response,
    query_int,
    query_str,
    read_body,
    require_api_token,
    sane_id,
    settings_of,
    sinks_of,
    store_of,
)
from receiver.sink_report import sink_views as shared_sink_views
from receiver.store import DeliveryFilter


def _state(text: str | None) -> DeliveryState | None:
    if not text:
        return None
    try:
        return DeliveryState(text)
    except ValueError as exc:
        raise BadRequest(
            f"state must be one of {', '.join(s.value for s in DeliveryState)}", field="state"
        ) from exc


async def list_deliveries(request: Request) -> Response:
    require_api_token(request)
    where = DeliveryFilter(
        state=_state(query_str(request, "state")),
        sink=query_str(request, "sink"),
        job_id=query_str(request, "job_id"),
        event_id=query_str(request, "event_id"),
    )
    deliveries = await store_of(request).list_deliveries(
        where, limit=query_int(request, "limit", 100, 1000)
    )
    return json_response({"deliveries": [d.view() for d in deliveries]})


async def get_delivery(request: Request) -> Response:
    """The delivery with its event's type and every attempt (oldest first)."""
    require_api_token(request)
    store = store_of(request)
    delivery = await store.get_delivery(request.path_params["delivery_id"])
    if delivery is None:
        raise NotFound("no such delivery")
    attempts = await store.list_attempts(delivery.id)
    body = delivery.view()
    body["attempt_count"] = body.pop("attempts")  # the list below takes the name
    body["attempts"] = [attempt.view() for attempt in attempts]
    return json_response(body)


async def retry_one(request: Request) -> Response:
    require_api_token(request)
    store = store_of(request)
    delivery_id = request.path_params["delivery_id"]
    if not sane_id(delivery_id) or await store.get_delivery(delivery_id) is None:
        raise NotFound("no such delivery")
    count = await store.replay(DeliveryFilter(delivery_id=delivery_id), utcnow())
    return json_response({"replayed": count}, status_code=202)


async def retry_many(request: Request) -> Response:
    """Replay every delivery matching ``{"state"?, "sink"?, "job_id"?}`` (default: dead)."""
    require_api_token(request)
    raw = await read_body(request, settings_of(request).max_body_bytes)
    body = decode_json(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    for name in ("state", "sink", "job_id"):
        if body.get(name) is not None:
            if not isinstance(body[name], str):
                raise BadRequest(f"{name!r} must be a string", field=name)
            clean_text(body[name], name)
    where = DeliveryFilter(
        state=_state(body.get("state")) or DeliveryState.DEAD,
        sink=body.get("sink"),
        job_id=body.get("job_id"),
    )
    count = await store_of(request).replay(where, utcnow())
    return json_response({"replayed": count}, status_code=202)


async def sink_views(request: Request) -> list[dict[str, Any]]:
    """Each configured sink's shared health, backlog and dead letters, as ``GET
    /v1/sinks`` (and the dashboard) show them: read from the store, so true in every
    delivery mode."""
    sinks = {name: sink.config for name, sink in sinks_of(request).items()}
    return await shared_sink_views(sinks, store_of(request))


async def list_sinks(request: Request) -> Response:
    require_api_token(request)
    return json_response({"sinks": await sink_views(request)})


routes = [
    Route("/v1/deliveries", list_deliveries, methods=["GET"]),
    Route("/v1/deliveries/retry", retry_many, methods=["POST"]),
    Route("/v1/deliveries/{delivery_id}", get_delivery, methods=["GET"]),
    Route("/v1/deliveries/{delivery_id}/retry", retry_one, methods=["POST"]),
    Route("/v1/sinks", list_sinks, methods=["GET"]),
]
