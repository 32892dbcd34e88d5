"""What every route shares: its collaborators (from the lifespan state), auth, bounded
body reads, JSON."""

from __future__ import annotations

import hmac
from typing import Any, cast

import orjson
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
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and (len(declared) > 18 or int(declared) > limit)
    ):
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


class FastJSONResponse(JSONResponse):
    """``JSONResponse`` rendered by orjson (the same compact UTF-8 bytes, a fraction of
    the cost on every callback's answer); what orjson refuses (an integer past 64 bits,
    a key that is not a string) is rendered by ``JSONResponse`` itself."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            return super().render(content)


def json_response(body: Any, status_code: int = 200) -> JSONResponse:
    return FastJSONResponse(body, status_code=status_code)


#: longer than any id, reference or sink name the relay hands out
MAX_PARAM_CHARS = 256


def clean_text(value: str, name: str) -> str:
    """``value`` if it is a sane identifier-like text; ``BadRequest`` naming ``name``
    for one too long or holding control characters (NUL breaks PostgreSQL)."""
    if len(value) > MAX_PARAM_CHARS:
        raise BadRequest(f"{name!r} is longer than {MAX_PARAM_CHARS} characters", field=name)
    if not value.isprintable():
        raise BadRequest(f"{name!r} holds control characters", field=name)
    return value


def sane_id(value: str) -> bool:
    """Whether ``value`` could be an id the relay handed out (ids that cannot be are
    answered 404 without asking the store: PostgreSQL refuses NUL in text)."""
    return len(value) <= MAX_PARAM_CHARS and value.isprintable()


def query_str(request: Request, name: str) -> str | None:
    """A text query parameter (``ref``, ``sink`` …): None when absent or blank."""
    text = request.query_params.get(name)
    return clean_text(text, name) if text else None


def query_int(request: Request, name: str, default: int, maximum: int) -> int:
    """An integer query parameter from 1 to ``maximum``; anything else (signs, digits
    past Python's limit, ``²``) is a ``BadRequest`` that says what is accepted."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and 1 <= int(text) <= maximum):
        raise BadRequest(f"{name!r} must be an integer from 1 to {maximum}", field=name)
    return int(text)
