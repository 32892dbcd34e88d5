"""The OpenAPI document's ``paths`` (``/v1``, callbacks, health) and ``webhooks`` (what
an http sink receives)."""

from __future__ import annotations

from typing import Any

from receiver.events import DeliveryState, JobStatus
from receiver.openapi.schemas import JSON, Schema, errors, json_body, obj, ref
from receiver.settings import Settings


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str, **schema: Any) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _link(operation_id: str, parameter: str, expression: str) -> Schema:
    return {operation_id: {"operationId": operation_id, "parameters": {parameter: expression}}}


LIMIT = _query(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": 1000},
    "at most this many, newest first (default 100; outside 1-1000 → 400)",
)
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def v1_paths(settings: Settings) -> dict[str, Schema]:
    sinks = {"type": "string", "examples": sorted(settings.sinks)}
    state = {"type": "string", "enum": [s.value for s in DeliveryState]}
    return {
        "/v1/upscales": {
            "post": {
                "operationId": "createUpscale",
                "summary": "Submit an upscale",
                "description": "Same `Idempotency-Key` and body → the same job, never "
                "submitted twice (`idempotent-replayed: true`); same key, another body → 422 "
                "`idempotency_key_reused`.",
                "security": BEARER,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": ref("UpscaleRequest")}},
                },
                "responses": {
                    "202": json_body(
                        ref("UpscaleAccepted"),
                        "Accepted: submitted to the provider, or queued behind its "
                        "concurrency cap.",
                        links=_link("getJob", "job_id", "$response.body#/job_id"),
                        headers={
                            "idempotent-replayed": {
                                "description": "present when an earlier request with this "
                                "Idempotency-Key made the job",
                                "schema": {"type": "string", "enum": ["true"]},
                            }
                        },
                    ),
                    **errors(400, 401, 402, 404, 409, 413, 422, 429, 502, 504),
                },
            }
        },
        "/v1/jobs": {
            "get": {
                "operationId": "listJobs",
                "summary": "List jobs, newest first",
                "security": BEARER,
                "parameters": [
                    _query("ref", {"type": "string"}, "only jobs with this ref"),
                    _query(
                        "status",
                        {"type": "string", "enum": [s.value for s in JobStatus]},
                        "only jobs in this status (empty: any)",
                    ),
                    _query("provider", {"type": "string"}, "only jobs of this provider"),
                    LIMIT,
                ],
                "responses": {
                    "200": json_body(
                        obj({"jobs": {"type": "array", "items": ref("Job")}}),
                        "The jobs.",
                        links=_link("getJob", "job_id", "$response.body#/jobs/0/job_id"),
                    ),
                    **errors(400, 401),
                },
            }
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "operationId": "getJob",
                "summary": "A job with its events",
                "security": BEARER,
                "parameters": [_path("job_id", "the `job_id` of a submission")],
                "responses": {
                    "200": json_body(ref("JobWithEvents"), "The job and its events, oldest first."),
                    **errors(401, 404),
                },
            }
        },
        "/v1/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "summary": "List deliveries, newest first",
                "security": BEARER,
                "parameters": [
                    _query("state", state, "only deliveries in this state (empty: any)"),
                    _query("sink", sinks, "only deliveries to this sink"),
                    _query("job_id", {"type": "string"}, "only deliveries of this job"),
                    _query("event_id", {"type": "string"}, "only deliveries of this event"),
                    LIMIT,
                ],
                "responses": {
                    "200": json_body(
                        obj({"deliveries": {"type": "array", "items": ref("Delivery")}}),
                        "The deliveries.",
                        links={
                            **_link(
                                "replayDelivery", "delivery_id", "$response.body#/deliveries/0/id"
                            ),
                            **_link(
                                "getDelivery", "delivery_id", "$response.body#/deliveries/0/id"
                            ),
                        },
                    ),
                    **errors(400, 401),
                },
            }
        },
        "/v1/deliveries/{delivery_id}": {
            "get": {
                "operationId": "getDelivery",
                "summary": "A delivery with its event's type and every attempt",
                "security": BEARER,
                "parameters": [_path("delivery_id", "a delivery's `id`")],
                "responses": {
                    "200": json_body(ref("DeliveryWithAttempts"), "The delivery."),
                    **errors(401, 404),
                },
            }
        },
        "/v1/stream": {
            "get": {
                "operationId": "stream",
                "summary": "Server-Sent Events: committed events and delivery outcomes, live",
                "description": "Each message: `id:` a cursor (send it back as "
                "`Last-Event-ID` to resume), `event:` the type (`upscale.*`, "
                "`delivery.delivered`, `delivery.retry_scheduled`, `delivery.dead`), "
                "`data:` one JSON object (the event sinks get, or the outcome). Without a "
                "cursor: what commits from now on (with `job_id`: the job's history first).",
                "security": BEARER,
                "parameters": [
                    _query("job_id", {"type": "string"}, "only this job"),
                    _query("ref", {"type": "string"}, "only jobs with this ref"),
                    _query("provider", {"type": "string"}, "only this provider"),
                    _query("sink", {"type": "string"}, "only outcomes of this sink"),
                    _query("type", {"type": "string"}, "types, comma-separated, `*` globs"),
                    _query("last_event_id", {"type": "string"}, "resume after this cursor"),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "resume after this cursor",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "An endless event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **errors(400, 401),
                },
            }
        },
        "/v1/deliveries/retry": {
            "post": {
                "operationId": "replayDeliveries",
                "summary": "Replay every delivery matching a filter (default: every dead one)",
                "description": "Matching deliveries that are not pending become pending, due "
                "now, with their attempt count reset; the event and its id stay the same.",
                "security": BEARER,
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": ref("ReplayFilter")}},
                },
                "responses": {
                    "202": json_body(ref("Replayed"), "How many deliveries were replayed."),
                    **errors(400, 401, 413),
                },
            }
        },
        "/v1/deliveries/{delivery_id}/retry": {
            "post": {
                "operationId": "replayDelivery",
                "summary": "Replay one delivery",
                "security": BEARER,
                "parameters": [_path("delivery_id", "a delivery's `id`")],
                "responses": {
                    "202": json_body(
                        ref("Replayed"), "1, or 0 when the delivery is already pending."
                    ),
                    **errors(401, 404),
                },
            }
        },
        "/v1/sinks": {
            "get": {
                "operationId": "listSinks",
                "summary": "Each configured sink's health and backlog",
                "security": BEARER,
                "responses": {
                    "200": json_body(
                        obj({"sinks": {"type": "array", "items": ref("Sink")}}),
                        "The sinks.",
                    ),
                    **errors(401),
                },
            }
        },
    }


def callback_paths(settings: Settings) -> dict[str, Schema]:
    provider = _path("provider", "a configured provider", examples=sorted(settings.providers))
    body = {
        "required": True,
        "description": "The provider's own callback JSON, verified before it is parsed.",
        "content": {JSON: {"schema": {"type": "object"}}},
    }
    headers = [
        {
            "name": name,
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": description,
        }
        for name, description in (
            ("x-webhook-secret", "Apiframe: the per-job (or account) webhook secret"),
            ("X-Webhook-Signature", "Kie: base64 HMAC-SHA256 of `taskId.timestamp`"),
            ("X-Webhook-Timestamp", "Kie: the signature's timestamp"),
        )
    ]
    accepted = json_body(
        ref("CallbackAccepted"),
        "Committed (or a duplicate: no new event). `event_id` is null while a Kie "
        "callback awaits its confirming poll.",
    )
    return {
        "/callbacks/{provider}/{token}": {
            "post": {
                "operationId": "jobCallback",
                "summary": "A provider's callback for a job we submitted",
                "description": "Checks in order: provider (404) → token (401) → the job's "
                "secret or signature (401) → parse (400) → correlation (409).",
                "parameters": [
                    provider,
                    _path("token", "the signed, expiring token of the job's callback URL"),
                    *headers,
                ],
                "requestBody": body,
                "responses": {"200": accepted, **errors(400, 401, 404, 409, 413)},
            }
        },
        "/callbacks/{provider}": {
            "post": {
                "operationId": "accountCallback",
                "summary": "An account-level callback (Kie with its HMAC key, Apiframe with "
                "its account secret)",
                "parameters": [provider, *headers],
                "requestBody": body,
                "responses": {"200": accepted, **errors(400, 401, 404, 409, 413)},
            }
        },
    }


def health_paths() -> dict[str, Schema]:
    status = {"type": "string"}
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {"200": json_body(obj({"status": status}), "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The store answers",
                "responses": {
                    "200": json_body(obj({"status": status, "store": status}), "Ready."),
                    "503": json_body(obj({"status": status, "store": status}), "Store down."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text exposition",
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def webhooks() -> dict[str, Schema]:
    signed = [
        {
            "name": name,
            "in": "header",
            "required": True,
            "schema": {"type": "string"},
            "description": description,
        }
        for name, description in (
            ("webhook-id", "the event's id: the same on every retry, for deduplication"),
            ("webhook-timestamp", "seconds since the epoch"),
            ("webhook-signature", "Standard Webhooks `v1,<base64 HMAC-SHA256>`, one per secret"),
        )
    ]
    return {
        "upscale-event": {
            "post": {
                "summary": "What an `http` sink receives for every routed event",
                "parameters": signed,
                "requestBody": {"required": True, "content": {JSON: {"schema": ref("Event")}}},
                "responses": {
                    "2XX": {"description": "Delivered."},
                    "410": {"description": "Gone: dead at once, never retried."},
                },
            }
        }
    }
