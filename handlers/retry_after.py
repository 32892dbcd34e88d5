"""``Retry-After`` (RFC 9110 §10.2.3): one parser for the provider adapters and the sinks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

MAX_RETRY_AFTER_S = 86400.0  # a pause asked for longer than a day is read as a day


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds form), clamped to 0 … a day;
    None when absent, blank, not a number or not finite."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, min(MAX_RETRY_AFTER_S, seconds))


class Answered(Protocol):
    """An HTTP answer with case-insensitive headers (an ``httpx.Response``, a sink
    client's ``Answer`` or ``Streamed``)."""

    @property
    def headers(self) -> Mapping[str, str]: ...


def retry_after(response: Answered) -> float | None:
    """The ``Retry-After`` of ``response`` in seconds (see ``parse_retry_after``)."""
    return parse_retry_after(response.headers.get("retry-after"))
