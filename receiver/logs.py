"""Logging: structlog (console on a terminal, JSON otherwise), the standard library's
loggers routed through it, request ids through contextvars, and a
redaction processor so secrets and tokens never reach a log line."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
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
    if "/callbacks/" not in path:
        return path
    return _CALLBACK_PATH.sub(r"\1" + REDACTED, path)


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    """Field names repeat: the regex runs once per name, not once per line."""
    return _SECRET_KEYS.search(key) is not None


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank every field whose name says it holds a secret."""
    for key in list(event_dict):
        if _is_secret_key(key) and event_dict[key] is not None:
            event_dict[key] = REDACTED
        elif key == "path" and isinstance(event_dict[key], str):
            event_dict[key] = redact_path(event_dict[key])
    return event_dict


def resolve_format(log_format: str = "auto") -> str:
    """``console`` or ``json``: ``auto`` is console on a terminal (stderr), else JSON."""
    if log_format in ("json", "console"):
        return log_format
    return "console" if sys.stderr.isatty() else "json"


#: the loggers uvicorn's CLI gives handlers of its own; they get the relay's instead
#: (``relay serve`` passes ``log_config=None``: they propagate to the root handler)
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def configure_logging(log_format: str = "auto", level: str = "info") -> str:
    """Set structlog up for this process and return the format chosen (``console`` or
    ``json``, see ``resolve_format``). The standard library's loggers (uvicorn's,
    asyncio's, libraries') go through the same processors and renderer, so with JSON
    chosen every line on stderr is JSON: tracebacks included, as an ``exception``
    field."""
    chosen = resolve_format(log_format)
    renderer: Any
    if chosen == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # write() + flush per line (cheaper than print); loggers are resolved once
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    for name in UVICORN_LOGGERS:
        routed = logging.getLogger(name)
        if routed.handlers:  # configured by uvicorn's own CLI: keep where, change how
            routed.handlers = [handler]
    return chosen


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    started: float
    logged: bool = False


_REQUEST: ContextVar[_Request | None] = ContextVar("relay_request", default=None)
_SANE_ID = re.compile(r"[\w.-]{1,64}")


class _RequestIds:
    """Unique request ids without a syscall per request: a random prefix per process
    (re-drawn after a fork) and a counter."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter = itertools.count()

    def next(self) -> str:
        if self._pid != os.getpid():
            self._pid, self._prefix = os.getpid(), os.urandom(8).hex()
        return f"{self._prefix}{next(self._counter):08x}"


_request_ids = _RequestIds()


def request_line(status: int) -> dict[str, Any]:
    """For a handler that writes its request's one log line itself (a callback's
    ``callback.accepted``): the fields the middleware's ``http.request`` line would
    carry, so the middleware writes none. Outside a request: no fields."""
    request = _REQUEST.get()
    if request is None:
        return {}
    request.logged = True
    return {
        "method": request.method,
        "path": redact_path(request.path),
        "status": status,
        "duration_ms": round((time.perf_counter() - request.started) * 1000, 2),
    }


class RequestLogMiddleware:
    """Pure ASGI middleware: binds a request id (``x-request-id`` if the caller sent a
    sane one) to structlog's contextvars, echoes it back, and logs one line per
    request (``http.request``, unless the handler wrote that line itself through
    ``request_line``). ``BaseHTTPMiddleware`` would break contextvars, hence pure ASGI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("relay.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        text = incoming.decode("latin-1")
        request_id = text if text and _SANE_ID.fullmatch(text) else _request_ids.next()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        request = _Request(scope["method"], scope["path"], time.perf_counter())
        token = _REQUEST.set(request)
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
            if not request.logged:
                self.log.info("http.request", **request_line(status))
            _REQUEST.reset(token)
            structlog.contextvars.clear_contextvars()
