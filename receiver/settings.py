"""Settings: the environment plus ``relay.toml``, read once into a frozen object.

``load_settings(environ)`` collects *every* problem before it raises one
``ConfigError``, so ``relay check-config`` and a refused start name them all at once.
Defaults live once, on the dataclasses: ``Settings`` here, ``ProviderConfig`` and
``SinkConfig`` in ``handlers``. A ``Settings`` field with ``metadata=toml("relay")``
(or ``"delivery"``) *is* a key of that table: read, type-checked and known, with no
other registration. ``load_store_settings`` is the small path for commands that only
open the store (``DATABASE_URL`` and nothing else).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from handlers.providers.base import ProviderConfig
from handlers.sinks.base import SinkConfig
from receiver.config_file import (
    check_keys,
    closest,
    interpolate,
    parse_toml,
    read_fields,
    read_file,
    table_at,
)
from receiver.errors import ConfigError
from receiver.routing import Route

SECRET_KEY = "RELAY_SECRET_KEY"  # noqa: S105 - a variable name, not a secret
API_TOKEN = "RELAY_API_TOKEN"  # noqa: S105
FULL_NEEDS: frozenset[str] = frozenset({SECRET_KEY, API_TOKEN})
TABLES = ("relay", "delivery", "providers", "sinks", "routes")
LOG_FORMATS = ("auto", "json", "console")


class DeliveryMode(StrEnum):
    INPROCESS = "inprocess"
    EXTERNAL = "external"
    INLINE = "inline"


def toml(table: str, key: str | None = None, **checks: Any) -> dict[str, Any]:
    """Field metadata: this ``Settings`` field is ``[table] key`` (default: the field's
    name) of ``relay.toml``; ``min=`` / ``choices=`` add checks."""
    return {"toml": table, "key": key, **checks}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the relay reads from its environment and config file."""

    database_url: str = "sqlite:///./relay.db"
    public_url: str = field(default="http://127.0.0.1:8000", metadata=toml("relay"))
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    api_token: str | None = field(default=None, repr=False)
    host: str = "0.0.0.0"
    port: int = 8000
    delivery_mode: DeliveryMode = DeliveryMode.INPROCESS
    log_format: str = "auto"  # auto: console on a terminal, JSON otherwise
    log_level: str = field(
        default="info", metadata=toml("relay", choices=("debug", "info", "warning", "error"))
    )
    dev_mode: bool = False
    config_path: str | None = None
    callback_max_age_s: int = field(default=7 * 24 * 3600, metadata=toml("relay", min=1))
    max_body_bytes: int = field(default=1024 * 1024, metadata=toml("relay", min=1))
    poll_tick_s: float = field(default=1.0, metadata=toml("relay"))
    retry_schedule_s: tuple[float, ...] = field(
        default=(0, 5, 300, 1800, 7200, 18000, 36000, 36000), metadata=toml("delivery")
    )
    retry_jitter: float = field(default=0.2, metadata=toml("delivery", "jitter"))
    lease_s: float = field(default=60.0, metadata=toml("delivery"))
    inline_budget_s: float = field(default=5.0, metadata=toml("delivery"))
    #: a destination answering 429 + Retry-After spends no attempts for this long
    throttle_budget_s: float = field(default=3600.0, metadata=toml("delivery", min=0))
    #: let sinks fetch image URLs that resolve to loopback, private … addresses
    allow_private_image_urls: bool = field(default=False, metadata=toml("relay"))
    retention_days: float = field(default=30.0, metadata=toml("relay"))
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    sinks: Mapping[str, SinkConfig] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    warnings: tuple[str, ...] = ()
    #: what dev mode (``RELAY_ENV=dev``) made up: variable name → value, to print once
    generated: Mapping[str, str] = field(default_factory=dict, repr=False)


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}
_DEFAULT_DATABASE_URL: str = _DEFAULTS["database_url"]
_DEFAULT_HOST: str = _DEFAULTS["host"]
_DEFAULT_PORT: int = _DEFAULTS["port"]


def table_keys(table: str) -> dict[str, str]:
    """TOML key → ``Settings`` field name, for ``[relay]`` or ``[delivery]``."""
    return {
        f.metadata.get("key") or f.name: f.name
        for f in dataclasses.fields(Settings)
        if f.metadata.get("toml") == table
    }


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    config_text: str | None = None,
    needs: Collection[str] = FULL_NEEDS,
    host: str | None = None,
    port: int | None = None,
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``) and the TOML file named by
    ``RELAY_CONFIG`` (default ``./relay.toml``, optional), or from ``config_text``.

    ``needs`` names the secrets the caller uses (``RELAY_SECRET_KEY``,
    ``RELAY_API_TOKEN``); ``host`` / ``port`` are ``relay serve``'s flags, which also
    shape the default ``RELAY_PUBLIC_URL``. Raises ``ConfigError`` listing every problem.
    """
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    config_path = env.get("RELAY_CONFIG", "./relay.toml")
    if config_text is None:
        config_text = read_file(config_path, required="RELAY_CONFIG" in env, problems=problems)
    raw = parse_toml(config_text, config_path, problems) if config_text is not None else {}
    raw = interpolate(raw, env, problems)
    settings = _build(env, raw, problems, needs=needs, host=host, port=port)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(
        settings, config_path=config_path if config_text is not None else None
    )


def load_store_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for commands that only open the store (``jobs``, ``deliveries``,
    ``replay``, ``migrate``, ``tail``): ``DATABASE_URL`` and the log format, and
    nothing else: no secrets, no ``relay.toml``."""
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    database_url = env.get("DATABASE_URL", _DEFAULT_DATABASE_URL)
    problems.extend(database_url_problems(database_url))
    log_format = _log_format(env, problems)
    if problems:
        raise ConfigError(problems)
    return Settings(database_url=database_url, log_format=log_format)


def database_url_problems(url: str) -> list[str]:
    """What is wrong with a ``DATABASE_URL`` (the store refuses the same URLs)."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError as exc:
            return [f"DATABASE_URL is not a valid PostgreSQL URL ({exc})"]
        from receiver.store import split_schema
        from receiver.store.postgres_schema import checked_schema

        try:
            checked_schema(split_schema(url)[1])
        except ConfigError as exc:
            return exc.problems
        return []
    if url.startswith("sqlite:///"):
        if url[len("sqlite:///") :] in ("", ":memory:"):
            return [f"DATABASE_URL {url!r} names no file: use sqlite:///relay.db"]
        return []
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").lstrip("/") or "relay.db"
        return [
            f"DATABASE_URL {url!r} is malformed: a SQLite URL has three slashes, "
            f"sqlite:///{path} (relative) or sqlite:////abs/{path} (absolute)"
        ]
    return [f"DATABASE_URL must be sqlite:///<file> or postgresql://…, not {url.split(':')[0]}"]


def _log_format(env: Mapping[str, str], problems: list[str]) -> str:
    log_format = env.get("RELAY_LOG_FORMAT", "auto") or "auto"
    if log_format not in LOG_FORMATS:
        problems.append("RELAY_LOG_FORMAT must be 'json' or 'console'")
        return "auto"
    return log_format


def _secrets(
    env: Mapping[str, str], dev_mode: bool, needs: Collection[str], problems: list[str]
) -> tuple[tuple[str, ...], str | None, dict[str, str]]:
    """The callback signing keys, the API token, and what dev mode made up."""
    generated: dict[str, str] = {}
    keys = tuple(k.strip() for k in env.get(SECRET_KEY, "").split(",") if k.strip())
    token = env.get(API_TOKEN) or None
    if not keys:
        if dev_mode:
            keys = (secrets.token_urlsafe(32),)
            generated[SECRET_KEY] = keys[0]
        elif SECRET_KEY in needs:
            problems.append(
                f"{SECRET_KEY} is not set: it signs callback URLs "
                "(make one with `relay gen-secret`; `relay demo` prints a working set)"
            )
    if token is None:
        if dev_mode:
            token = generated[API_TOKEN] = secrets.token_urlsafe(24)
        elif API_TOKEN in needs:
            problems.append(
                f"{API_TOKEN} is not set: it is the bearer token of /v1/* "
                "(make one with `relay gen-secret`; `relay demo` prints a working set)"
            )
    return keys, token, generated


def default_public_url(host: str, port: int) -> str:
    """Where this process is reached when ``RELAY_PUBLIC_URL`` is unset: the bound
    host, or 127.0.0.1 for a wildcard bind."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _port(env: Mapping[str, str], flag: int | None, problems: list[str]) -> int:
    if flag is not None:
        if not 0 < flag < 65536:
            problems.append(f"--port must be between 1 and 65535, not {flag}")
        return flag
    text = env.get("PORT", str(_DEFAULT_PORT))
    if text.isascii() and text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    problems.append(f"PORT must be a port number (1-65535), not {text!r}")
    return _DEFAULT_PORT


def _build(
    env: Mapping[str, str],
    raw: dict[str, Any],
    problems: list[str],
    *,
    needs: Collection[str],
    host: str | None,
    port: int | None,
) -> Settings:
    for name in raw:
        if name not in TABLES:
            match = closest(name, TABLES)
            hint = f" (did you mean [{match}]?)" if match else ""
            problems.append(f"unknown table [{name}] in the config file{hint}")
    dev_mode = env.get("RELAY_ENV", "").lower() in ("dev", "development")
    warnings: list[str] = []
    secret_keys, api_token, generated = _secrets(env, dev_mode, needs, problems)
    for name in generated:
        warnings.append(f"{name} unset: using a random value (dev mode only)")

    bound_port = _port(env, port, problems)
    mode_text = env.get("RELAY_DELIVERY_MODE", DeliveryMode.INPROCESS.value)
    try:
        mode = DeliveryMode(mode_text)
    except ValueError:
        problems.append(
            f"RELAY_DELIVERY_MODE must be one of {', '.join(m.value for m in DeliveryMode)}"
        )
        mode = DeliveryMode.INPROCESS
    database_url = env.get("DATABASE_URL", _DEFAULT_DATABASE_URL)
    problems.extend(database_url_problems(database_url))

    values: dict[str, Any] = {}
    for table_name in ("relay", "delivery"):
        table = table_at("", raw, table_name, problems)
        keys = table_keys(table_name)
        check_keys(f"[{table_name}]", table, keys, problems)
        values.update(read_fields(table_name, table, Settings, problems, keys=keys))
    bind_host = host if host is not None else _DEFAULT_HOST
    public_url = (env.get("RELAY_PUBLIC_URL") or values.pop("public_url", "")).rstrip("/")
    if not public_url:
        public_url = default_public_url(bind_host, bound_port)
        if not dev_mode:
            warnings.append(f"RELAY_PUBLIC_URL unset: callbacks will point at {public_url}")

    from receiver.config_tables import providers, routes, sinks

    allow_private = values.get("allow_private_image_urls", False)
    sink_configs = {
        name: dataclasses.replace(config, allow_private_image_urls=allow_private)
        for name, config in sinks(table_at("", raw, "sinks", problems), problems).items()
    }
    return Settings(
        database_url=database_url,
        public_url=public_url,
        secret_keys=secret_keys,
        api_token=api_token,
        host=bind_host,
        port=bound_port,
        delivery_mode=mode,
        log_format=_log_format(env, problems),
        dev_mode=dev_mode,
        providers=providers(table_at("", raw, "providers", problems), problems),
        sinks=sink_configs,
        routes=routes(raw.get("routes", []), sink_configs, problems),
        warnings=tuple(warnings),
        generated=generated,
        **values,
    )


def unused_sinks(settings: Settings) -> list[str]:
    """Sinks that no route names (only meaningful when routes exist)."""
    if not settings.routes:
        return []
    used = {sink for route in settings.routes for sink in route.sinks}
    return [name for name in settings.sinks if name not in used]
