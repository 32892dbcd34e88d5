"""Decoding untrusted JSON bodies: every way a body can be bad is a 400, never a 500."""

from __future__ import annotations

import json
from typing import Any

from receiver.errors import BadRequest


def decode_json(body: bytes) -> Any:
    """The body as JSON, or ``BadRequest``.

    Beyond syntax errors this refuses what ``json.loads`` lets through or trips over:
    invalid UTF-8, nesting deep enough to exhaust the recursion limit, integers past
    Python's digit limit, and lone surrogates (``"\\ud800"``) that no store can encode.
    """
    try:
        value = json.loads(body)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeError) as exc:
        raise BadRequest("body is not valid JSON") from exc
    return value
