"""Name templates for broker sinks (routing keys, subjects, stream keys).

A template may use ``{type}`` (``upscale.completed`` …), ``{provider}``, ``{job_id}``
and ``{ref}``; the last two are empty when the event has no job (or the job no ref).
Anything else in braces is a configuration problem, found by ``template_problems``
without rendering.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from receiver.events import Event

PLACEHOLDERS = ("type", "provider", "job_id", "ref")
_FORMATTER = string.Formatter()


def template_values(event: Event) -> dict[str, str]:
    """The placeholder values of ``event`` (empty strings for a missing job or ref)."""
    return {
        "type": event.type.value,
        "provider": event.data["provider"],
        "job_id": event.data["job_id"] or "",
        "ref": event.data["ref"] or "",
    }


def render(template: str, event: Event) -> str:
    """``template`` with ``event``'s values in place (checked by ``template_problems``)."""
    return template.format_map(template_values(event))


def template_problems(options: Mapping[str, Any], key: str) -> list[str]:
    """Why ``options[key]`` is not a usable template (absent is fine: defaults apply)."""
    value = options.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"'{key}' must be a string"]
    try:
        fields = [name for _, name, spec, conv in _FORMATTER.parse(value) if name is not None]
    except ValueError as exc:
        return [f"'{key}' is not a valid template ({exc})"]
    unknown = sorted({name for name in fields if name not in PLACEHOLDERS})
    if unknown:
        known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        return [f"'{key}' uses unknown placeholder(s) {', '.join(unknown)} (known: {known})"]
    return []


def scheme_problems(options: Mapping[str, Any], key: str, schemes: tuple[str, ...]) -> list[str]:
    """A problem when ``options[key]`` is set but does not start with one of ``schemes``
    (the value itself is never echoed: a URL may carry a password)."""
    value = options.get(key)
    if value is None or value == "":
        return []
    if not isinstance(value, str) or not value.startswith(tuple(s + "://" for s in schemes)):
        return [f"'{key}' must start with {' or '.join(s + '://' for s in schemes)}"]
    return []
