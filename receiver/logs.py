"""Logging: structlog, JSON when not on a tty, request ids through contextvars, and a
redaction processor so secrets and tokens never reach a log line."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SECRET_KEYS = re.compile(
    r"(secret|token|password|authorization|api_key|apikey|signature|credential)", re.I
)
_CALLBACK_PATH = re.compile(r"(/callbacks/[^/]+/)[^/?#]+")
REDACTED = "[redacted]"


def redact_path(path: str) -> str:
    """A callback path with its token replaced (the token is a credential)."""
    return _CALLBACK_PATH.sub(r"\1" + REDACTED, path)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank every field whose name says it holds a secret."""
    for key in list(event_dict):
        if _SECRET_KEYS.search(key) and event_dict[key] is not None:
            event_dict[key] = REDACTED
        elif key == "path" and isinstance(event_dict[key], str):
            event_dict[key] = redact_path(event_dict[key])
    return event_dict


def configure_logging(log_format: str = "json", level: str = "info") -> None:
    """Set structlog up once per process: JSON (or console on a tty when asked)."""
    renderer: Any
    if log_format == "console" and sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


class RequestLogMiddleware:
    """Pure ASGI middleware: binds a request id (``x-request-id`` if the caller sent a
    sane one) to structlog's contextvars, echoes it back, and logs one line per
    request. ``BaseHTTPMiddleware`` would break contextvars, hence pure ASGI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("relay.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if re.fullmatch(r"[\w.-]{1,64}", incoming) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.log.info(
                "http.request",
                method=scope["method"],
                path=redact_path(scope["path"]),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()
