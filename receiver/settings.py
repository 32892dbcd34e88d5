"""Settings: the environment plus ``relay.toml``, read once into a frozen object.

``load_settings(environ)`` collects *every* problem before it raises one
``ConfigError``, so ``relay check-config`` and a refused start name them all at once.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from handlers.providers.base import ProviderConfig
from handlers.sinks.base import SinkConfig
from receiver.errors import ConfigError
from receiver.routing import Route

DEFAULT_RETRY_SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_CALLBACK_MAX_AGE_S = 7 * 24 * 3600
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class DeliveryMode(StrEnum):
    INPROCESS = "inprocess"
    EXTERNAL = "external"
    INLINE = "inline"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the relay reads from its environment and config file."""

    database_url: str = "sqlite:///./relay.db"
    public_url: str = "http://127.0.0.1:8000"
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    api_token: str | None = field(default=None, repr=False)
    port: int = 8000
    delivery_mode: DeliveryMode = DeliveryMode.INPROCESS
    log_format: str = "json"
    log_level: str = "info"
    dev_mode: bool = False
    config_path: str | None = None
    callback_max_age_s: int = DEFAULT_CALLBACK_MAX_AGE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    retry_jitter: float = 0.2
    lease_s: float = 60.0
    inline_budget_s: float = 5.0
    poll_tick_s: float = 1.0
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    sinks: Mapping[str, SinkConfig] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    warnings: tuple[str, ...] = ()


def load_settings(
    environ: Mapping[str, str] | None = None, *, config_text: str | None = None
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``) and the TOML file named by
    ``RELAY_CONFIG`` (default ``./relay.toml``, optional), or from ``config_text``.

    Raises ``ConfigError`` listing every problem found.
    """
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    config_path = env.get("RELAY_CONFIG", "./relay.toml")
    raw: dict[str, Any] = {}
    if config_text is None:
        path = Path(config_path)
        if path.is_file():
            config_text = path.read_text(encoding="utf-8")
        elif "RELAY_CONFIG" in env:
            problems.append(f"RELAY_CONFIG names {config_path!r}, which does not exist")
    if config_text is not None:
        try:
            raw = tomllib.loads(config_text)
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{config_path}: not valid TOML ({exc})")
    raw = _interpolate(raw, env, problems, "")
    reader = _Reader(raw, problems)
    settings = _build(env, reader, problems, config_path if config_text is not None else None)
    if problems:
        raise ConfigError(problems)
    return settings


def _interpolate(value: Any, env: Mapping[str, str], problems: list[str], where: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:  # ${VAR:-default}
                return default
            problems.append(f"{where or 'config'}: ${{{name}}} is not set")
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {
            key: _interpolate(item, env, problems, f"{where}.{key}" if where else key)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(item, env, problems, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def _bare(key: str) -> str:
    """``poll_after_s`` → ``poll_after``: the accepted spelling without the unit."""
    return key.removesuffix("_s")


def _with_bare(keys: set[str]) -> set[str]:
    return keys | {_bare(key) for key in keys}


class _Reader:
    """Typed reads from a TOML table, recording a problem for each wrong type."""

    def __init__(self, raw: dict[str, Any], problems: list[str]) -> None:
        self.raw = raw
        self.problems = problems

    def table(self, where: str, table: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = table.get(key, {})
        if not isinstance(value, dict):
            self.problems.append(f"{where}{key} must be a table")
            return {}
        return value

    def number(self, where: str, table: Mapping[str, Any], key: str, default: float) -> float:
        """``key`` (units in the name, ``poll_after_s``), or the same without the unit
        suffix (``poll_after``), as the issue texts spell some of them."""
        value = table.get(key, table.get(_bare(key), default))
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.problems.append(f"{where}{key} must be a non-negative number")
            return default
        return float(value)

    def schedule(self, where: str, table: Mapping[str, Any], key: str) -> tuple[float, ...] | None:
        value = table.get(key, table.get(_bare(key)))
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value
            )
        ):
            self.problems.append(f"{where}{key} must be a non-empty list of seconds")
            return None
        return tuple(float(v) for v in value)

    def strings(self, where: str, table: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{where}{key} must be a list of strings")
            return None
        return tuple(value)


def _build(
    env: Mapping[str, str], reader: _Reader, problems: list[str], config_path: str | None
) -> Settings:
    raw = reader.raw
    relay = reader.table("", raw, "relay")
    delivery = reader.table("", raw, "delivery")
    dev_mode = env.get("RELAY_ENV", "").lower() in ("dev", "development")
    warnings: list[str] = []

    secret_keys = tuple(k.strip() for k in env.get("RELAY_SECRET_KEY", "").split(",") if k.strip())
    api_token = env.get("RELAY_API_TOKEN") or None
    if not secret_keys:
        if dev_mode:
            secret_keys = (secrets.token_urlsafe(32),)
            warnings.append("RELAY_SECRET_KEY unset: using a random key (dev mode only)")
        else:
            problems.append(
                "RELAY_SECRET_KEY is not set (run `relay demo` to see generated values)"
            )
    if api_token is None:
        if dev_mode:
            api_token = secrets.token_urlsafe(24)
            warnings.append("RELAY_API_TOKEN unset: using a random token (dev mode only)")
        else:
            problems.append("RELAY_API_TOKEN is not set (run `relay demo` to see generated values)")

    port_text = env.get("PORT", "8000")
    port_ok = port_text.isascii() and port_text.isdigit()
    port = int(port_text) if port_ok else 8000
    if not port_ok:
        problems.append(f"PORT must be a number, not {port_text!r}")

    mode_text = env.get("RELAY_DELIVERY_MODE", DeliveryMode.INPROCESS.value)
    try:
        mode = DeliveryMode(mode_text)
    except ValueError:
        problems.append(
            f"RELAY_DELIVERY_MODE must be one of {', '.join(m.value for m in DeliveryMode)}"
        )
        mode = DeliveryMode.INPROCESS

    log_format = env.get("RELAY_LOG_FORMAT", "json")
    if log_format not in ("json", "console"):
        problems.append("RELAY_LOG_FORMAT must be 'json' or 'console'")

    database_url = env.get("DATABASE_URL", "sqlite:///./relay.db")
    if not database_url.startswith(("sqlite://", "postgresql://", "postgres://")):
        problems.append("DATABASE_URL must start with sqlite:// or postgresql://")

    public_url = (env.get("RELAY_PUBLIC_URL") or str(relay.get("public_url") or "")).rstrip("/")
    if not public_url:
        public_url = f"http://127.0.0.1:{port}"
        if not dev_mode:
            warnings.append(f"RELAY_PUBLIC_URL unset: callbacks will point at {public_url}")

    schedule = (
        reader.schedule("delivery.", delivery, "retry_schedule_s") or DEFAULT_RETRY_SCHEDULE_S
    )
    providers = _providers(reader, problems)
    sinks = _sinks(reader, problems)
    routes = _routes(reader, problems, sinks)

    return Settings(
        database_url=database_url,
        public_url=public_url,
        secret_keys=secret_keys,
        api_token=api_token,
        port=port,
        delivery_mode=mode,
        log_format=log_format,
        log_level=str(relay.get("log_level", "info")),
        dev_mode=dev_mode,
        config_path=config_path,
        callback_max_age_s=int(
            reader.number("relay.", relay, "callback_max_age_s", DEFAULT_CALLBACK_MAX_AGE_S)
        ),
        max_body_bytes=int(
            reader.number("relay.", relay, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
        ),
        retry_schedule_s=schedule,
        retry_jitter=reader.number("delivery.", delivery, "jitter", 0.2),
        lease_s=reader.number("delivery.", delivery, "lease_s", 60.0),
        inline_budget_s=reader.number("delivery.", delivery, "inline_budget_s", 5.0),
        poll_tick_s=reader.number("relay.", relay, "poll_tick_s", 1.0),
        providers=providers,
        sinks=sinks,
        routes=routes,
        warnings=tuple(warnings),
    )


_PROVIDER_KEYS = _with_bare(
    {
        "api_key",
        "base_url",
        "confirm_by_poll",
        "poll_after_s",
        "poll_interval_s",
        "deadline_s",
        "max_jobs",
    }
)


def _providers(reader: _Reader, problems: list[str]) -> dict[str, ProviderConfig]:
    from handlers.providers import PROVIDERS

    result: dict[str, ProviderConfig] = {}
    for name, table in reader.table("", reader.raw, "providers").items():
        where = f"providers.{name}: "
        if name not in PROVIDERS:
            problems.append(f"{where}unknown provider (known: {', '.join(sorted(PROVIDERS))})")
            continue
        if not isinstance(table, dict):
            problems.append(f"{where}must be a table")
            continue
        api_key = table.get("api_key")
        if not isinstance(api_key, str) or not api_key:
            problems.append(f"{where}api_key is required")
            api_key = ""
        provider_cls = PROVIDERS[name]
        max_jobs = table.get("max_jobs")
        if max_jobs is not None and (not isinstance(max_jobs, int) or max_jobs < 1):
            problems.append(f"{where}max_jobs must be a positive integer")
            max_jobs = None
        result[name] = ProviderConfig(
            name=name,
            api_key=api_key,
            base_url=str(table.get("base_url") or provider_cls.default_base_url).rstrip("/"),
            confirm_by_poll=bool(
                table.get("confirm_by_poll", provider_cls.confirm_by_poll_default)
            ),
            poll_after_s=reader.number(where, table, "poll_after_s", 120.0),
            poll_interval_s=reader.number(where, table, "poll_interval_s", 15.0),
            deadline_s=reader.number(where, table, "deadline_s", 1800.0),
            max_jobs=max_jobs if max_jobs is not None else provider_cls.max_jobs_default,
            options={k: v for k, v in table.items() if k not in _PROVIDER_KEYS},
        )
    return result


_SINK_KEYS = _with_bare(
    {
        "type",
        "retry_schedule_s",
        "timeout_s",
        "max_concurrency",
        "circuit_failure_threshold",
        "circuit_probe_interval_s",
    }
)


def _sinks(reader: _Reader, problems: list[str]) -> dict[str, SinkConfig]:
    from handlers.sinks import SINKS

    result: dict[str, SinkConfig] = {}
    for name, table in reader.table("", reader.raw, "sinks").items():
        where = f"sinks.{name}: "
        if not isinstance(table, dict):
            problems.append(f"{where}must be a table")
            continue
        sink_type = table.get("type")
        if sink_type not in SINKS:
            problems.append(
                f"{where}unknown sink type {sink_type!r} (known: {', '.join(sorted(SINKS))})"
            )
            continue
        options = {k: v for k, v in table.items() if k not in _SINK_KEYS}
        problems.extend(where + p for p in SINKS[sink_type].config_problems(options))
        result[name] = SinkConfig(
            name=name,
            type=sink_type,
            options=options,
            retry_schedule_s=reader.schedule(where, table, "retry_schedule_s"),
            timeout_s=reader.number(where, table, "timeout_s", 10.0),
            max_concurrency=max(1, int(reader.number(where, table, "max_concurrency", 8))),
            circuit_failure_threshold=max(
                1, int(reader.number(where, table, "circuit_failure_threshold", 10))
            ),
            circuit_probe_interval_s=reader.number(where, table, "circuit_probe_interval_s", 30.0),
        )
    return result


def _routes(
    reader: _Reader, problems: list[str], sinks: Mapping[str, SinkConfig]
) -> tuple[Route, ...]:
    raw_routes = reader.raw.get("routes", [])
    if not isinstance(raw_routes, list):
        problems.append("routes must be an array of tables ([[routes]])")
        return ()
    routes: list[Route] = []
    for index, table in enumerate(raw_routes):
        where = f"routes[{index}]: "
        if not isinstance(table, dict):
            problems.append(f"{where}must be a table")
            continue
        sink_names = reader.strings(where, table, "sinks") or ()
        if not sink_names:
            problems.append(f"{where}names no sinks")
        for sink in sink_names:
            if sink not in sinks:
                problems.append(f"{where}names unknown sink {sink!r}")
        ref_prefix = table.get("ref_prefix")
        routes.append(
            Route(
                sinks=sink_names,
                events=reader.strings(where, table, "events") or ("*",),
                providers=reader.strings(where, table, "providers") or ("*",),
                ref_prefix=ref_prefix if isinstance(ref_prefix, str) else None,
            )
        )
    return tuple(routes)


def unused_sinks(settings: Settings) -> list[str]:
    """Sinks that no route names (only meaningful when routes exist)."""
    if not settings.routes:
        return []
    used = {sink for route in settings.routes for sink in route.sinks}
    return [name for name in settings.sinks if name not in used]
