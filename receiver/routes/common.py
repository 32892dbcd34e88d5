"""What every route shares: its collaborators (from the lifespan state), auth, bounded
body reads, JSON."""

from __future__ import annotations

import hmac
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse

from handlers.sinks import Sink
from receiver.errors import BadRequest, PayloadTooLarge, Unauthorized
from receiver.ingest import Ingestor
from receiver.jsonbody import decode_json
from receiver.metrics import Metrics
from receiver.settings import Settings
from receiver.store import Store
from receiver.submission import Submitter
from receiver.worker import DeliveryWorker


def settings_of(request: Request) -> Settings:
    return cast(Settings, request.state.settings)


def store_of(request: Request) -> Store:
    return cast(Store, request.state.store)


def metrics_of(request: Request) -> Metrics:
    return cast(Metrics, request.state.metrics)


def sinks_of(request: Request) -> dict[str, Sink]:
    return cast(dict[str, Sink], request.state.sinks)


def ingestor_of(request: Request) -> Ingestor:
    return cast(Ingestor, request.state.ingestor)


def submitter_of(request: Request) -> Submitter:
    return cast(Submitter, request.state.submitter)


def worker_of(request: Request, key: str = "worker") -> DeliveryWorker | None:
    """The in-process (``worker``) or inline (``inline_worker``) worker, if this process
    has one."""
    return cast(DeliveryWorker | None, getattr(request.state, key, None))


def require_api_token(request: Request) -> None:
    """``Authorization: Bearer $RELAY_API_TOKEN``, compared in constant time."""
    expected = settings_of(request).api_token or ""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given or not expected:
        raise Unauthorized("missing bearer token")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("invalid bearer token")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, or ``PayloadTooLarge`` as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body exceeds {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> Any:
    body = await read_body(request, settings_of(request).max_body_bytes)
    if not body:
        raise BadRequest("body is empty; send JSON")
    return decode_json(body)


def json_response(body: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code)


def query_int(request: Request, name: str, default: int, maximum: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"{name!r} must be a positive integer", field=name)
    return max(1, min(maximum, int(text)))
