"""Delivery attempts as the store records them: one row per try of a delivery.

An attempt keeps what an operator needs to see why a delivery failed — when it started,
how long it took, the HTTP status or transport error, the destination's *host* (never
the URL: paths and queries carry tokens) and the first KiB of what the destination
answered, with anything that looks like a secret replaced by ``[redacted]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from receiver.events import isoformat

EXCERPT_BYTES = 1024  # what an attempt keeps of a response body
_SCAN_BYTES = 8 * EXCERPT_BYTES  # redacted before truncation, so no secret is cut in half
REDACTED = "[redacted]"
_SECRET_NAME = re.compile(
    r"secret|token|password|passwd|authorization|api_?key|apikey|signature|credential|"
    r"access_?key|session",
    re.I,
)
_URL_OPTIONS = ("url", "endpoint_url", "servers", "brokers", "broker_url", "host")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Standard Webhooks secrets and Slack / GitHub / AWS style tokens
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), REDACTED),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]+"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    # three base64url segments: a JWT
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), REDACTED),
    # "Authorization: Bearer x", "Basic x"
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.I), r"\1 " + REDACTED),
    # a URL's query string and user info
    (re.compile(r"(\b[a-z][a-z0-9+.-]{0,30}://)[^/\s\"'@]{1,256}@", re.I), r"\1" + REDACTED + "@"),
    (re.compile(r"(\bhttps?://[^\s\"'?#]+)\?[^\s\"'#]*", re.I), r"\1?" + REDACTED),
)
# key = value / "key": "value" (the key checked for a secret's name in ``_keyed``); the
# bounded key keeps the scan linear on long bodies
_KEY_VALUE = re.compile(r"""(?<![\w.-])([\w.-]{1,64})(["']?\s*[:=]\s*["']?)([^"'\s,&;}<]+)""")
_SECRET_WORD = re.compile(
    r"secret|token|password|passwd|api_?key|apikey|signature|credential|authorization", re.I
)


#: each pattern above needs one of these: a text without any skips the substitutions
_TRIGGER = re.compile(
    r"whsec_|xox[abposr]-|gh[pousr]_|AKIA|ASIA|eyJ|(?i:bearer|basic|token)\s|://|[:=]"
)


def _keyed(match: re.Match[str]) -> str:
    key, between, _value = match.groups()
    if _SECRET_WORD.search(key):
        return key + between + REDACTED
    return match.group(0)


@dataclass(frozen=True, slots=True)
class NewAttempt:
    """An attempt to record with its delivery's outcome (the store numbers it)."""

    started_at: datetime
    duration_ms: float
    status: int | None
    error: str | None
    host: str | None
    response_excerpt: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a delivery, as ``GET /v1/deliveries/{id}`` lists it.

    ``n`` counts from 1 for the delivery (a replay continues the numbering);
    ``status`` is the destination's HTTP status (None without one: a transport error,
    a file); ``error`` is None for a delivered attempt."""

    n: int
    started_at: datetime
    duration_ms: float
    status: int | None
    error: str | None
    host: str | None
    response_excerpt: str | None

    def view(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "started_at": isoformat_ms(self.started_at),
            "duration_ms": round(self.duration_ms, 1),
            "status": self.status,
            "error": self.error,
            "host": self.host,
            "response_excerpt": self.response_excerpt,
        }


def isoformat_ms(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds (attempts are often less than a second apart)."""
    text = isoformat(moment)
    assert text is not None
    return text[:-1] + f".{moment.microsecond // 1000:03d}Z"


def host_of(url: str) -> str | None:
    """``https://user:pw@hooks.example.com:8443/p?q=1`` → ``hooks.example.com:8443``:
    the host (and a non-default port), nothing else."""
    try:
        parts = urlsplit(url.strip())
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return hostname if port is None or port == default else f"{hostname}:{port}"


def destination_host(options: Mapping[str, Any], declared: str | None = None) -> str | None:
    """Where a sink sends to: the sink's own ``destination_host`` when it declares one,
    else the host of its first URL-like option (``url``, ``endpoint_url``, ``servers`` …)."""
    if declared:
        return declared
    for key in _URL_OPTIONS:
        value = options.get(key)
        if isinstance(value, list | tuple) and value:
            value = value[0]
        if isinstance(value, str) and value:
            found = host_of(value if "://" in value else f"tcp://{value}")
            if found:
                return found
    return None


def known_secrets(options: Mapping[str, Any]) -> list[str]:
    """The values in a sink's options that must never be shown: options whose name says
    secret/token/password…, every URL option whole, its path, password and query values."""
    found: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str) and len(value) >= 6:
            found.append(value)
        elif isinstance(value, list | tuple):
            for item in value:
                add(item)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if _SECRET_NAME.search(str(key)):
                    add(item)

    for key, value in options.items():
        if _SECRET_NAME.search(key):
            add(value)
        elif key == "headers" and isinstance(value, Mapping):
            add({k: v for k, v in value.items()})
            for header, item in value.items():
                if str(header).lower() in ("authorization", "cookie", "x-api-key"):
                    add(item)
        elif key in _URL_OPTIONS and isinstance(value, str) and "://" in value:
            add(value)
            parts = urlsplit(value)
            if parts.path not in ("", "/"):
                add(parts.path)
            add(parts.password or "")
            add([item for _, item in parse_qsl(parts.query)])
    return sorted(set(found), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` and every secret-looking token replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    if _TRIGGER.search(text) is None:
        return text
    return _redact_patterns(text)


def _redact_patterns(text: str) -> str:
    """The pattern substitutions of ``redact`` (the given secrets already replaced)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _KEY_VALUE.sub(_keyed, text)


def response_excerpt(body: bytes | str | None, secrets: Iterable[str] = ()) -> str | None:
    """The first KiB of a response body, redacted; None for no body."""
    if body is None:
        return None
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else body
    if not raw:
        return None
    text = redact(raw[:_SCAN_BYTES].decode("utf-8", "replace"), secrets)
    clipped = text.encode("utf-8")[:EXCERPT_BYTES]
    return clipped.decode("utf-8", "ignore")
