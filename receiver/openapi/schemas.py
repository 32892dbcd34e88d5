"""The OpenAPI document's building blocks and ``components.schemas``: the error body,
the normalised event, jobs, deliveries, sinks and the request bodies."""

from __future__ import annotations

from typing import Any

from handlers.providers.actions import ALL_ACTIONS, LABELS
from receiver.events import DeliveryState, ErrorCode, EventType, JobStatus
from receiver.settings import Settings

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: Schema, *optional: str, **extra: Any) -> Schema:
    """An object schema whose properties are all required but ``optional``."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "required": required, "properties": properties, **extra}


def one_of(values: list[str]) -> Schema:
    """A string, one of ``values`` when there are any."""
    return {"type": "string", "enum": values} if values else {"type": "string"}


def json_body(schema: Schema, description: str, **extra: Any) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


TIME = {"type": "string", "format": "date-time"}

ERRORS: dict[int, str] = {
    400: "Malformed JSON (also non-finite numbers, invalid UTF-8) or invalid fields "
    "(`bad_request`, `invalid_payload`); `field` names the culprit.",
    401: "Missing or wrong bearer token, callback token, secret or signature (`unauthorized`).",
    402: "The provider account has no credits left (`provider_insufficient_credits`).",
    404: "No such job, delivery or route (`not_found`), or provider (`unknown_provider`).",
    409: "A conflict (`conflict`): a callback naming another job's task, or an "
    "`Idempotency-Key` whose first request failed.",
    413: "The body exceeds `[relay] max_body_bytes` (`payload_too_large`, with `limit`).",
    422: "Understood but not doable: `unknown_sink`, "
    "`unsupported_action` (with `supported`), `idempotency_key_reused`, `provider_rejected`.",
    429: "The provider is rate limiting or at its concurrency cap (`provider_rate_limited`, "
    "with `retry_after_s`); `Retry-After` says when to try again.",
    502: "The provider failed or refused our credentials (`provider_unavailable`, "
    "`provider_auth_failed`).",
    504: "The provider did not answer in time (`provider_unavailable`).",
}


def errors(*codes: int) -> dict[str, Schema]:
    answers: dict[str, Schema] = {}
    for code in codes:
        extra: dict[str, Any] = {}
        if code == 429:
            extra["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        answers[str(code)] = json_body(ref("Error"), ERRORS[code], **extra)
    return answers


def component_schemas(settings: Settings) -> dict[str, Schema]:
    text = {"type": "string"}
    strings = {"type": "array", "items": text}
    maybe_text = nullable(text)
    count = {"type": "integer", "minimum": 0}
    job_status = {"type": "string", "enum": [s.value for s in JobStatus]}
    delivery_state = {"type": "string", "enum": [s.value for s in DeliveryState]}
    callback_mode = {"type": "string", "enum": ["webhook", "poll"]}
    job = {
        "job_id": text,
        "provider": text,
        "provider_task_id": maybe_text,
        "parent_id": text,
        "action": text,
        "ref": maybe_text,
        "status": job_status,
        "callback": callback_mode,
        "sinks": nullable(strings),
        "submitted_at": nullable(TIME),
        "finished_at": nullable(TIME),
    }
    delivery = {
        "id": text,
        "event_id": text,
        "event_type": maybe_text,
        "job_id": maybe_text,
        "sink": text,
        "state": delivery_state,
        "attempts": count,
        "next_attempt_at": nullable(TIME),
        "last_status": nullable({"type": "integer"}),
        "last_error": maybe_text,
        "created_at": TIME,
        "updated_at": TIME,
    }
    return {
        "Error": obj(
            {"error": text, "message": text},
            description="Every error: a machine code, a human message, and context fields "
            "(`field`, `limit`, `supported`, `configured`, `provider`, `retry_after_s` …).",
            additionalProperties=True,
        ),
        "EventError": obj(
            {"code": {"type": "string", "enum": [c.value for c in ErrorCode]}, "message": text}
        ),
        "EventData": obj(
            {
                "job_id": maybe_text,
                "provider": text,
                "provider_task_id": text,
                "parent_id": maybe_text,
                "action": maybe_text,
                "ref": maybe_text,
                "status": job_status,
                "progress": nullable({"type": "integer", "minimum": 0, "maximum": 100}),
                "image_url": maybe_text,
                "image_urls": strings,
                "buttons": strings,
                "error": nullable(ref("EventError")),
                "submitted_at": nullable(TIME),
                "finished_at": nullable(TIME),
            }
        ),
        "Event": obj(
            {
                "id": {"type": "string", "pattern": "^evt_"},
                "type": {"type": "string", "enum": [t.value for t in EventType]},
                "timestamp": TIME,
                "data": ref("EventData"),
            },
            description="The normalised event every sink receives. `id` is stable per "
            "(provider, task, state) — per percentage for progress — and is sent as "
            "`webhook-id`.",
        ),
        "UpscaleRequest": obj(
            {
                "provider": {**one_of(sorted(settings.providers)), "description": "configured"},
                "parent_id": {"type": "string", "pattern": "\\S", "description": "the grid task"},
                "action": {
                    **one_of([*ALL_ACTIONS, *LABELS.values()]),
                    "description": "our name or the Midjourney label (case-insensitive); "
                    "what the provider cannot do is 422 `unsupported_action`",
                },
                "ref": {**maybe_text, "description": "your reference; events carry it"},
                "sinks": {
                    **nullable({"type": "array", "items": one_of(sorted(settings.sinks))}),
                    "description": "overrides the routes for this job",
                },
            },
            "ref",
            "sinks",
        ),
        "UpscaleAccepted": obj(
            {
                "job_id": text,
                "provider": text,
                "provider_task_id": maybe_text,
                "status": {"type": "string", "enum": ["queued", "submitted"]},
                "callback": callback_mode,
                "action": text,
                "ref": maybe_text,
            }
        ),
        "Job": obj(job),
        "JobWithEvents": obj({**job, "events": {"type": "array", "items": ref("JobEvent")}}),
        "JobEvent": {
            "allOf": [
                ref("Event"),
                obj({"deliveries": {"type": "array", "items": ref("EventDelivery")}}),
            ],
            "description": "An event as sinks get it, plus each of its deliveries.",
        },
        "EventDelivery": obj(
            {
                "id": text,
                "sink": text,
                "state": delivery_state,
                "attempts": count,
                "last_status": nullable({"type": "integer"}),
                "last_error": maybe_text,
            }
        ),
        "Delivery": obj(delivery),
        "DeliveryWithAttempts": obj(
            {
                **{k: v for k, v in delivery.items() if k != "attempts"},
                "attempt_count": count,
                "attempts": {"type": "array", "items": ref("Attempt")},
            },
            description="`attempts` lists every attempt, oldest first; `attempt_count` is "
            "the delivery's count since its last replay.",
        ),
        "Attempt": obj(
            {
                "n": {"type": "integer", "minimum": 1},
                "started_at": {"type": "string", "format": "date-time"},
                "duration_ms": {"type": "number", "minimum": 0},
                "status": nullable({"type": "integer"}),
                "error": maybe_text,
                "host": maybe_text,
                "response_excerpt": maybe_text,
            },
            description="One try: the destination's host only (never its URL) and the "
            "first KiB of its answer, secrets redacted.",
        ),
        "ReplayFilter": obj(
            {"state": nullable(delivery_state), "sink": maybe_text, "job_id": maybe_text},
            "state",
            "sink",
            "job_id",
            description="Which deliveries to replay; the state defaults to `dead`.",
        ),
        "Replayed": obj({"replayed": count}),
        "Sink": obj(
            {
                "name": text,
                "type": text,
                "state": {"type": "string", "enum": ["ok", "paused", "probing"]},
                "backlog": count,
                "dead": count,
                "oldest_pending_at": nullable(TIME),
                "last_error": maybe_text,
                "failures": count,
                "opened_at": nullable(TIME),
                "circuit_opened": count,
                "circuit_closed": count,
            },
            description="The sink's circuit as every process shares it (from the store).",
        ),
        "CallbackAccepted": obj(
            {"ok": {"const": True}, "event_id": maybe_text, "duplicate": {"type": "boolean"}}
        ),
    }
