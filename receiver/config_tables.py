"""``[providers.NAME]``, ``[sinks.NAME]`` and ``[[routes]]``: each table checked
against its dataclass's fields plus the plugin's own ``options_keys``, read with types,
and handed to the plugin's ``config_problems``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from handlers.providers.base import ProviderConfig
from handlers.sinks.base import SinkConfig
from receiver.config_file import check_keys, did_you_mean, read_fields
from receiver.routing import Route

#: fields of the config dataclasses that are not keys of their table
#: ``allow_private_image_urls`` is ``[relay]``'s, handed to every sink
_NOT_KEYS = frozenset({"name", "options", "allow_private_image_urls"})


def common_keys(cls: type) -> dict[str, str]:
    """TOML key → field name for the keys every provider (or sink) understands."""
    return {f.name: f.name for f in dataclasses.fields(cls) if f.name not in _NOT_KEYS}


def providers(tables: Mapping[str, Any], problems: list[str]) -> dict[str, ProviderConfig]:
    """One ``ProviderConfig`` per valid ``[providers.NAME]`` table."""
    from handlers.providers import PROVIDERS

    keys = common_keys(ProviderConfig)
    result: dict[str, ProviderConfig] = {}
    for name, table in tables.items():
        where = f"providers.{name}"
        if name not in PROVIDERS:
            problems.append(
                f"{where}: unknown provider{did_you_mean(name, PROVIDERS)} "
                f"(known: {', '.join(sorted(PROVIDERS))})"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table")
            continue
        provider_cls = PROVIDERS[name]
        check_keys(f"[{where}]", table, {*keys, *provider_cls.options_keys}, problems)
        values: dict[str, Any] = {
            "base_url": provider_cls.default_base_url,
            "confirm_by_poll": provider_cls.confirm_by_poll_default,
            "max_jobs": provider_cls.max_jobs_default,
            **read_fields(where, table, ProviderConfig, problems, keys=keys),
        }
        if not values.get("api_key"):
            problems.append(f"{where}: api_key is required")
            values["api_key"] = ""
        values["base_url"] = values["base_url"].rstrip("/")
        if not values["base_url"].startswith(("http://", "https://")):
            problems.append(f"{where}: base_url must be an http:// or https:// URL")
        options = {k: v for k, v in table.items() if k in provider_cls.options_keys}
        problems.extend(f"{where}: {p}" for p in provider_cls.config_problems(options))
        result[name] = ProviderConfig(name=name, options=options, **values)
    return result


def sinks(tables: Mapping[str, Any], problems: list[str]) -> dict[str, SinkConfig]:
    """One ``SinkConfig`` per valid ``[sinks.NAME]`` table."""
    from handlers.sinks import SINKS

    keys = common_keys(SinkConfig)
    result: dict[str, SinkConfig] = {}
    for name, table in tables.items():
        where = f"sinks.{name}"
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table")
            continue
        sink_type = table.get("type")
        if sink_type not in SINKS:
            hint = did_you_mean(sink_type, SINKS) if isinstance(sink_type, str) else ""
            problems.append(
                f"{where}: unknown sink type {sink_type!r}{hint} "
                f"(known: {', '.join(sorted(SINKS))})"
            )
            continue
        sink_cls = SINKS[sink_type]
        check_keys(f"[{where}]", table, {*keys, *sink_cls.options_keys}, problems)
        options = {k: v for k, v in table.items() if k in sink_cls.options_keys}
        problems.extend(f"{where}: {p}" for p in sink_cls.config_problems(options))
        values = read_fields(where, table, SinkConfig, problems, keys=keys)
        result[name] = SinkConfig(name=name, options=options, **values)
    return result


def routes(
    raw_routes: Any, sinks: Mapping[str, SinkConfig], problems: list[str]
) -> tuple[Route, ...]:
    """The ``[[routes]]`` array; each route must name known sinks."""
    if not isinstance(raw_routes, list):
        problems.append("routes must be an array of tables ([[routes]])")
        return ()
    keys = {f.name: f.name for f in dataclasses.fields(Route)}
    result: list[Route] = []
    for index, table in enumerate(raw_routes):
        where = f"[[routes]] #{index + 1}"
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table")
            continue
        check_keys(where, table, keys, problems)
        values = read_fields(where, table, Route, problems, keys=keys)
        for key in ("events", "providers"):
            if values.get(key) == ():
                del values[key]  # an empty filter means "any", as when it is absent
        sink_names: tuple[str, ...] = values.pop("sinks", ())
        if not sink_names:
            problems.append(f"{where}: names no sinks")
        for sink in sink_names:
            if sink not in sinks:
                problems.append(f"{where}: names unknown sink {sink!r}{did_you_mean(sink, sinks)}")
        result.append(Route(sinks=sink_names, **values))
    return tuple(result)
