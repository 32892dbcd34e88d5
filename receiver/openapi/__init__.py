"""The OpenAPI 3.1 description of the relay's HTTP API (``GET /openapi.json``).

It describes what the code returns — every ``/v1`` route, the callback routes, the
health routes, the normalised event (as ``components.schemas.Event`` and as the
``webhooks`` entry every http sink receives) and the error body ``{"error",
"message", ...}`` with each status code a route can answer. ``tests/openapi`` runs
schemathesis against the live app to keep it true.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from receiver.openapi.paths import callback_paths, health_paths, v1_paths, webhooks
from receiver.openapi.schemas import component_schemas
from receiver.settings import Settings

TAGS = (("/v1/", "api"), ("/callbacks/", "callbacks"), ("/", "health"))


def _tagged(paths: dict[str, Any]) -> dict[str, Any]:
    for path, item in paths.items():
        tag = next(name for prefix, name in TAGS if path.startswith(prefix))
        for operation in item.values():
            operation["tags"] = [tag]
    return paths


def build_openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a relay with these settings (its providers and
    sinks are the submit body's enums and the callback path's examples)."""
    try:
        version = package_version("upscale-relay")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "0"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "upscale-relay",
            "version": version,
            "description": "Submit Midjourney upscales through providers, receive their "
            "verified callbacks, and fan the normalised events out to sinks. Errors are "
            '`{"error": "<code>", "message": "…", …}`.',
        },
        "servers": [{"url": settings.public_url}],
        "tags": [
            {"name": "api", "description": "`Authorization: Bearer $RELAY_API_TOKEN`"},
            {"name": "callbacks", "description": "what providers call; signed tokens"},
            {"name": "health", "description": "liveness, readiness, metrics"},
        ],
        "paths": _tagged({**v1_paths(settings), **callback_paths(settings), **health_paths()}),
        "webhooks": webhooks(),
        "components": {
            "schemas": component_schemas(settings),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer $RELAY_API_TOKEN`",
                }
            },
        },
    }
