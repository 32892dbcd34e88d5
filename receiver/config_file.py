"""The config file (``relay.toml``): TOML read once, ``${VAR}`` interpolated, then read
with types and strictness.

Every table's known keys come from a config dataclass's fields (``Settings``,
``ProviderConfig``, ``SinkConfig``, ``Route``) plus a plugin's ``options_keys``, so a new
key is known the moment its field exists. A duration key ``poll_after_s`` may also be
spelled without its unit (``poll_after``). Unknown keys and tables are problems that
name the key, its table and the closest known key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)$")


def read_file(path: str, *, required: bool, problems: list[str]) -> str | None:
    """The text of the config file at ``path``; None when it is absent and optional.
    Missing (when ``required``), unreadable and non-UTF-8 files are problems."""
    file = Path(path)
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            problems.append(f"RELAY_CONFIG names {path!r}, which does not exist")
    except IsADirectoryError:
        problems.append(f"RELAY_CONFIG names {path!r}, which is a directory, not a file")
    except PermissionError:
        problems.append(f"{path}: permission denied (the relay cannot read its config file)")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text (byte {exc.start})")
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})")
    return None


def parse_toml(text: str, path: str, problems: list[str]) -> dict[str, Any]:
    """The TOML document, or ``{}`` and a problem ``path:line:column: …``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _POSITION.search(message)
        if position is None:
            problems.append(f"{path}: not valid TOML ({message})")
        else:
            line, column = position.groups()
            reason = message[: position.start()].strip()
            problems.append(f"{path}:{line}:{column}: not valid TOML: {reason}")
        return {}


def interpolate(value: Any, env: Mapping[str, str], problems: list[str], where: str = "") -> Any:
    """``${VAR}`` (an unset one is a problem) and ``${VAR:-default}`` in every string."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{where or 'config'}: ${{{name}}} is not set")
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {
            key: interpolate(item, env, problems, f"{where}.{key}" if where else key)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [interpolate(item, env, problems, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def bare(key: str) -> str:
    """``poll_after_s`` → ``poll_after``: the accepted spelling without the unit."""
    return key.removesuffix("_s")


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known word most like ``word`` (difflib), if any is close enough."""
    matches = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, known: Iterable[str], quote: str = "`") -> str:
    """`` (did you mean `base_url`?)`` or ``""``."""
    match = closest(word, known)
    return f" (did you mean {quote}{match}{quote}?)" if match else ""


def check_keys(
    where: str, table: Mapping[str, Any], known: Collection[str], problems: list[str]
) -> None:
    """A problem for each key of ``table`` that ``known`` lacks, and for a key given both
    with and without its unit. ``where`` names the table as a user sees it
    (``[providers.kie]``)."""
    spellings = {spelling: key for key in known for spelling in (key, bare(key))}
    for key in table:
        if key not in spellings:
            match = closest(key, spellings)
            hint = f" (did you mean `{spellings[match]}`?)" if match else ""
            problems.append(f"unknown key `{key}` in {where}{hint}")
        elif key != spellings[key] and spellings[key] in table:
            problems.append(f"{where}: `{key}` and `{spellings[key]}` are one key; keep one")


def table_at(
    where: str, parent: Mapping[str, Any], key: str, problems: list[str]
) -> dict[str, Any]:
    """``parent[key]`` as a table (``{}`` when absent); anything else is a problem."""
    value = parent.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"{where}{key} must be a table")
        return {}
    return value


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass."""
    return typing.get_type_hints(cls)


def read_fields(
    where: str,
    table: Mapping[str, Any],
    cls: type,
    problems: list[str],
    *,
    keys: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The values ``table`` gives for ``cls``'s fields, checked against each field's type
    (and its ``metadata`` ``min`` / ``choices``). Only keys present are returned: what is
    absent keeps the dataclass default, so defaults live once, on the dataclass.

    ``keys`` maps TOML key → field name (default: every field, under its own name).
    """
    hints = field_types(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    result: dict[str, Any] = {}
    for key, name in (keys or {n: n for n in by_name}).items():
        spelling = key if key in table else bare(key) if bare(key) in table else None
        if spelling is None:
            continue
        value = _typed(f"{where}: {key}", table[spelling], hints[name], problems)
        if value is _WRONG:
            continue
        value = _checked(f"{where}: {key}", value, by_name[name].metadata, problems)
        if value is not _WRONG:
            result[name] = value
    return result


_WRONG: Any = object()


def _typed(where: str, value: Any, hint: Any, problems: list[str]) -> Any:
    """``value`` if it fits ``hint`` (bool, int, float, str, tuple[X, ...], X | None)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{where} must be true or false")
    elif hint is int:
        if number and float(value).is_integer() and value >= 0:
            return int(value)
        problems.append(f"{where} must be a non-negative whole number")
    elif hint is float:
        if number and value >= 0 and value == value and value != float("inf"):
            return float(value)
        problems.append(f"{where} must be a non-negative number")
    elif hint is str:
        if isinstance(value, str):
            return value
        problems.append(f"{where} must be a string")
    elif typing.get_origin(hint) is tuple:
        return _typed_tuple(where, value, typing.get_args(hint)[0], problems)
    else:  # pragma: no cover - a field type this reader does not know is a bug
        raise TypeError(f"{where}: cannot read a {hint!r} from TOML")
    return _WRONG


def _typed_tuple(where: str, value: Any, item: Any, problems: list[str]) -> Any:
    if item is str:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        problems.append(f"{where} must be a list of strings")
        return _WRONG
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return tuple(float(v) for v in value)
    problems.append(f"{where} must be a non-empty list of seconds")
    return _WRONG


def _checked(where: str, value: Any, metadata: Mapping[str, Any], problems: list[str]) -> Any:
    minimum = metadata.get("min")
    if minimum is not None and value < minimum:
        problems.append(f"{where} must be at least {minimum}")
        return _WRONG
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        problems.append(f"{where} must be one of {', '.join(map(str, choices))}")
        return _WRONG
    return value
