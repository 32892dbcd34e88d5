"""Logging: structlog (console on a terminal, JSON otherwise), the standard library's
loggers routed through it, request ids through contextvars, and a
redaction processor so secrets and tokens never reach a log line."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from receiver.settings import Settings

_SECRET_KEYS = re.compile(
    r"(secret|token|password|authorization|api_key|apikey|signature|credential)", re.I
)
REDACTED = "[redacted]"
#: everything after ``/callbacks/{provider}/`` is a credential, at any depth
_CALLBACK_PATH = re.compile(r"(/callbacks/[^/?#\s\"']+/)[^?#\s\"']+")
#: shapes of credentials wherever they appear in a text
_SHAPES = (
    # itsdangerous tokens (and JWTs): base64url segments joined by dots
    re.compile(r"\.?e[yJ][A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}"),
    # Standard Webhooks / Svix secrets
    re.compile(r"whsec_[A-Za-z0-9+/=_-]+"),
    # Slack incoming-webhook paths
    re.compile(r"(?<=hooks\.slack\.com/services/)[^\s\"'?#]+"),
)
_BEARER = re.compile(r"(?i)(\b(?:bearer|basic)\s+)[^\s\"',;]+")
_SECRET_QUERY = re.compile(
    r"(?i)([?&;][^=&\s\"'#]*(?:secret|token|key|sig|signature|password|auth)[^=&\s\"'#]*=)"
    r"[^&\s\"'#]*"
)
#: a text none of these occur in matches none of the patterns above (each pattern needs
#: one of them), so most log values skip the five substitutions: one C-level scan instead
_TRIGGER = re.compile(
    r"/callbacks/[^/?#\s\"']+/|e[yJ][A-Za-z0-9_-]{4,}\.|whsec_|hooks\.slack\.com/services/"
    r"|(?i:bearer|basic)\s|[?&;]"
)
_registered: tuple[str, ...] = ()
#: texts found clean since the last ``register_secrets``: log values repeat (a
#: provider's name, a path, an event type), and a dict lookup is a tenth of a scan
_clean: dict[str, None] = {}
_CLEAN_MAX_ITEMS = 4096
_CLEAN_MAX_CHARS = 256
MIN_SECRET_CHARS = 6


def register_secrets(values: Iterable[str | None]) -> None:
    """Add configured secret values (keys, API tokens, HMAC keys, sink secrets) that
    must never appear in a log line, whatever field or text they turn up in."""
    global _registered
    found = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_CHARS}
    _registered = tuple(sorted(set(_registered) | found, key=len, reverse=True))
    _clean.clear()  # a text clean before may hold a newly registered value


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value in ``settings``: signing keys, the API token, provider keys
    and secret-named options, sink secrets and URLs that are credentials themselves
    (Slack webhooks), and the database password."""
    found: list[str | None] = [*settings.secret_keys, settings.api_token]
    found.append(urlsplit(settings.database_url).password)
    for provider in settings.providers.values():
        found.append(provider.api_key)
        found.extend(_secret_options(provider.options))
    for sink in settings.sinks.values():
        found.extend(_secret_options(sink.options))
        if sink.type == "slack":
            found.append(str(sink.options.get("url") or sink.options.get("webhook_url") or ""))
    return [value for value in found if value]


def _secret_options(options: Mapping[str, Any]) -> list[str]:
    values: list[str] = []
    for key, value in options.items():
        if _SECRET_KEYS.search(key) or key.endswith(("_key", "_secret")):
            items = value if isinstance(value, list) else [value]
            values.extend(str(item) for item in items if isinstance(item, str))
    return values


def redact_text(text: str) -> str:
    """``text`` with every credential-shaped part replaced: callback tokens at any
    depth of a ``/callbacks/`` path, signed tokens, ``whsec_`` secrets, Bearer values,
    secret-named query parameters and the registered secret values."""
    if text in _clean:
        return text
    redacted = text
    for value in _registered:
        if value in redacted:
            redacted = redacted.replace(value, REDACTED)
    if _TRIGGER.search(redacted) is not None:
        redacted = _redact_shapes(redacted)
    # clean, or a fixed point (already redacted): redacting it again gives it back
    if redacted == text and len(text) <= _CLEAN_MAX_CHARS:
        if len(_clean) >= _CLEAN_MAX_ITEMS:
            _clean.clear()
        _clean[text] = None
    return redacted


def _redact_shapes(text: str) -> str:
    """The pattern substitutions of ``redact_text`` (registered values already done)."""
    text = _CALLBACK_PATH.sub(r"\1" + REDACTED, text)
    for shape in _SHAPES:
        text = shape.sub(REDACTED, text)
    text = _BEARER.sub(r"\1" + REDACTED, text)
    return _SECRET_QUERY.sub(r"\1" + REDACTED, text)


#: ``/callbacks/{provider}/{token}`` with plain segments: the token goes without a scan
_PLAIN_TOKEN_PATH = re.compile(r"(/callbacks/[A-Za-z0-9_-]+/)[A-Za-z0-9_.~-]+")


def redact_path(path: str) -> str:
    """A request path with its credentials replaced (see ``redact_text``). A job's
    callback path loses its token at once, which leaves the same text for every callback
    of a provider (remembered clean, see ``_clean``); property-tested to equal
    ``redact_text``."""
    plain = _PLAIN_TOKEN_PATH.fullmatch(path)
    if plain is not None:
        return redact_text(plain[1] + REDACTED)
    return redact_text(path)


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth < 3 and isinstance(value, list | tuple):
        return [_redact_value(item, depth + 1) for item in value]
    if depth < 3 and isinstance(value, dict):
        return {
            k: REDACTED if _SECRET_KEYS.search(str(k)) else _redact_value(v, depth + 1)
            for k, v in value.items()
        }
    return value


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    """Field names repeat: the regex runs once per name, not once per line."""
    return _SECRET_KEYS.search(key) is not None


_SCALARS = frozenset({int, float, bool})


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank every field whose name says it holds a secret and
    redact credential shapes in every other value (the event message included)."""
    for key, value in event_dict.items():  # values change, keys do not
        if value is None:
            continue
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        elif type(value) is str:
            event_dict[key] = redact_text(value)
        elif type(value) not in _SCALARS:
            event_dict[key] = _redact_value(value)
    return event_dict


def redact_rendered(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor after ``format_exc_info``: a traceback text is redacted too."""
    exception = event_dict.get("exception")
    if isinstance(exception, str):
        event_dict["exception"] = redact_text(exception)
    return event_dict


_stamp_second: tuple[int, str] = (-1, "")  # (a whole second, its formatted prefix)


def add_timestamp(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``timestamp``, RFC 3339 UTC with microseconds
    (``2026-12-02T01:33:00.227121Z``). The date and time of day are formatted once per
    second: a quarter of the cost of ``TimeStamper(fmt="iso")`` on a busy worker."""
    global _stamp_second
    now = time.time()
    whole = int(now)
    second, prefix = _stamp_second
    if whole != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
        _stamp_second = (whole, prefix)
    event_dict["timestamp"] = f"{prefix}{int((now - whole) * 1_000_000):06d}Z"
    return event_dict


def dumps_log_line(value: Any, **kwargs: Any) -> bytes:
    """One JSON log line with orjson (several times faster than ``json``); what orjson
    refuses (an integer beyond 64 bits, say) goes through ``json`` instead. The
    standard library's records keep ``json``: that handler needs text, and the stream's
    text layer and its buffer are both flushed after every line, so lines never mix."""
    try:
        return orjson.dumps(value, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, **kwargs).encode()


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
    foreign_renderer: Any
    if chosen == "console":
        renderer = foreign_renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        logger_factory: Any = structlog.WriteLoggerFactory(sys.stderr)
    else:
        # orjson straight to the byte stream (structlog's documented fast path); the
        # standard library's records need text
        foreign_renderer = structlog.processors.JSONRenderer()
        buffer = getattr(sys.stderr, "buffer", None)
        if buffer is not None:
            renderer = structlog.processors.JSONRenderer(serializer=dumps_log_line)
            logger_factory = structlog.BytesLoggerFactory(buffer)
        else:  # a text-only stream (a test's StringIO)
            renderer, logger_factory = foreign_renderer, structlog.WriteLoggerFactory(sys.stderr)
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_timestamp,
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact_rendered, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # write() + flush per line (cheaper than print); loggers are resolved once
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_rendered,
                foreign_renderer,
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
