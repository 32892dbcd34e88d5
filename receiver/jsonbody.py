"""Decoding untrusted JSON: every way a body can be bad is a 400, never a 500.

``decode_json`` is the edge (request bodies); ``loads_strict`` the same rules for
text from elsewhere (a provider's poll answer); ``decode_nested`` for JSON that sits
inside a string field (Kie's ``promptJson``), with a tighter size bound.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from receiver.errors import BadRequest, PayloadError

#: deeper than any provider's payload; far below the interpreter's recursion limit
MAX_DEPTH = 64
#: JSON inside a string field (``promptJson`` …) is a request echo: small
MAX_NESTED_BYTES = 64 * 1024
NESTED_MAX_DEPTH = 16


class StrictJSONError(ValueError):
    """The text is not strict JSON (syntax, non-finite numbers, depth, encoding);
    ``too_deep`` when nesting alone was the problem."""

    def __init__(self, message: str, *, too_deep: bool = False) -> None:
        super().__init__(message)
        self.too_deep = too_deep


def _refuse_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError("number out of range")
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    """Iteratively: no container nested deeper than ``max_depth``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise StrictJSONError("nested too deeply", too_deep=True)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


#: orjson reads an integer past 64 bits as a float: a run of 19 digits (anywhere, a
#: string's included) sends the text the exact way
_LONG_DIGITS = re.compile(r"\d{19}")
_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")
_UNDECIDED = object()


def loads_strict(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` without its extensions: no ``NaN``/``Infinity`` literals, no
    number that overflows to infinity (``1e400``), no integer past Python's digit
    limit, nesting at most ``max_depth``, no invalid UTF-8 or lone surrogates.
    Raises ``StrictJSONError`` (a ``ValueError``)."""
    value = _loads_fast(text, max_depth)
    return _loads_exact(text, max_depth) if value is _UNDECIDED else value


def _loads_fast(text: str | bytes, max_depth: int) -> Any:
    """orjson's answer where it is the same as ``_loads_exact``'s (a fraction of the
    cost): orjson refuses everything the exact way refuses (and a little more: a BOM,
    UTF-16), so only its acceptance is trusted; a refusal or a long digit run is
    ``_UNDECIDED``. Property-tested against ``_loads_exact``."""
    if isinstance(text, bytes):
        long_digits = _LONG_DIGITS_BYTES.search(text) is not None
        brackets = text.count(b"[") + text.count(b"{")
    else:
        long_digits = _LONG_DIGITS.search(text) is not None
        brackets = text.count("[") + text.count("{")
    if long_digits:
        return _UNDECIDED
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _UNDECIDED
    if brackets > max_depth:  # fewer brackets than that cannot nest deeper
        try:
            _check_depth(value, max_depth)
        except StrictJSONError:
            return _UNDECIDED
    return value


def _loads_exact(text: str | bytes, max_depth: int) -> Any:
    """The standard library's parser with the extensions refused (see ``loads_strict``)."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        _check_depth(value, max_depth)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except StrictJSONError:
        raise
    except RecursionError as exc:
        raise StrictJSONError("nested too deeply", too_deep=True) from exc
    except (ValueError, UnicodeError, TypeError) as exc:
        raise StrictJSONError(type(exc).__name__) from exc
    return value


def decode_json(body: bytes) -> Any:
    """The body as JSON, or ``BadRequest`` (the rules of ``loads_strict``)."""
    try:
        return loads_strict(body)
    except StrictJSONError as exc:
        raise BadRequest("body is not valid JSON") from exc


def decode_nested(
    text: str, field_name: str, *, max_bytes: int = MAX_NESTED_BYTES, lenient: bool = False
) -> Any:
    """JSON held in a string field (Kie's ``promptJson``, ``resultInfoJson``), bounded
    in size and depth; ``PayloadError`` naming the field otherwise. ``lenient`` (for
    fields that are context only): text that is simply not JSON gives None, but a
    hostile shape (too large, too deep) is still a ``PayloadError``."""
    if len(text) > max_bytes:
        raise PayloadError(field_name, f"holds more than {max_bytes} characters of JSON")
    try:
        return loads_strict(text, max_depth=NESTED_MAX_DEPTH)
    except StrictJSONError as exc:
        if exc.too_deep:
            raise PayloadError(field_name, "holds JSON nested too deeply") from exc
        if lenient:
            return None
        raise PayloadError(field_name, "is not valid JSON") from exc
