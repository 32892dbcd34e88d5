"""Strict configuration: known keys come from the config dataclasses' fields and the
plugins' ``options_keys``; typos, wrong types and bad URLs are named."""

from __future__ import annotations

import dataclasses

import pytest

from handlers.providers import PROVIDERS
from handlers.sinks import SINKS
from receiver.errors import ConfigError
from receiver.logs import resolve_format
from receiver.settings import (
    Settings,
    database_url_problems,
    load_settings,
    load_store_settings,
    table_keys,
)

ENV = {"RELAY_SECRET_KEY": "k", "RELAY_API_TOKEN": "t"}


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env or ENV, config_text=text)
    return caught.value.problems


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


@pytest.mark.parametrize("table", ["relay", "delivery"])
def test_every_settings_field_with_toml_metadata_is_a_known_key(table: str) -> None:
    """Each ``[relay]`` / ``[delivery]`` key is a ``Settings`` field: writing every one
    (with a value other than its default) loads, and each value lands in its field."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    keys = table_keys(table)
    assert keys
    lines = [f"[{table}]"]
    expected = {}
    for key, name in keys.items():
        default = fields[name].default
        if name == "log_level":
            value: object = "debug"
        elif name == "public_url":
            value = "https://relay.example.com"
        elif isinstance(default, tuple):
            value = (1.0, 2.0)
        elif isinstance(default, bool):
            value = not default
        elif isinstance(default, int | float):
            value = type(default)(default + 1)
        else:
            value = default
        lines.append(f"{key} = {_toml(value)}")
        expected[name] = value
    settings = load_settings(ENV, config_text="\n".join(lines) + "\n")
    for name, value in expected.items():
        assert getattr(settings, name) == value, name


def test_every_plugin_declares_its_option_keys() -> None:
    """Each sink and provider names its own keys; a typo of each is caught with a hint."""
    for registry in (SINKS, PROVIDERS):
        for plugin in registry.values():
            assert isinstance(plugin.options_keys, frozenset)
    for sink_type, sink in SINKS.items():
        for key in sink.options_keys:
            problems = problems_of(f'[sinks.x]\ntype = "{sink_type}"\n{key}x = 1\n')
            assert f"unknown key `{key}x` in [sinks.x] (did you mean `{key}`?)" in problems


def test_both_spellings_of_one_key_and_wrong_types_are_named() -> None:
    """`poll_after` and `poll_after_s` together, a string for a bool, a negative number
    and a zero concurrency are each one problem naming the key."""
    problems = problems_of(
        """
[providers.useapi]
api_key = "k"
poll_after = 1
poll_after_s = 2
confirm_by_poll = "yes"
deadline_s = -1
max_jobs = 0
[sinks.f]
type = "file"
path = "x"
max_concurrency = 0
"""
    )
    assert "[providers.useapi]: `poll_after` and `poll_after_s` are one key; keep one" in problems
    assert "providers.useapi: confirm_by_poll must be true or false" in problems
    assert "providers.useapi: deadline_s must be a non-negative number" in problems
    assert "providers.useapi: max_jobs must be at least 1" in problems
    assert "sinks.f: max_concurrency must be at least 1" in problems


def test_unknown_provider_and_sink_type_get_a_suggestion() -> None:
    """`[providers.kei]` and `type = "slak"` say what was probably meant."""
    problems = "\n".join(problems_of('[providers.kei]\napi_key = "k"\n[sinks.s]\ntype = "slak"\n'))
    assert "providers.kei: unknown provider (did you mean `kie`?)" in problems
    assert "unknown sink type 'slak' (did you mean `slack`?)" in problems


def test_toml_errors_give_line_and_column_and_a_missing_file_is_named() -> None:
    """A syntax error says file:line:column; a RELAY_CONFIG naming nothing is named."""
    assert problems_of('[relay]\nlog_level = "info"\n[sinks\n') == [
        "./relay.toml:3:7: not valid TOML: Expected ']' at the end of a table declaration"
    ]
    with pytest.raises(ConfigError) as caught:
        load_settings({**ENV, "RELAY_CONFIG": "/nonexistent/relay.toml"})
    assert caught.value.problems == [
        "RELAY_CONFIG names '/nonexistent/relay.toml', which does not exist"
    ]


def test_database_urls_are_checked_before_the_store_is_opened() -> None:
    """Two-slash SQLite URLs, :memory:, bad ports and other schemes are refused."""
    assert database_url_problems("sqlite:///./relay.db") == []
    assert database_url_problems("postgresql://u:p@db:5432/relay?schema=relay") == []
    for url in ("sqlite://relay.db", "sqlite:///:memory:", "postgresql://h:port/db", "mysql://x"):
        assert database_url_problems(url), url
    assert "sqlite:///relay.db" in database_url_problems("sqlite://relay.db")[0]


def test_store_settings_read_only_database_url() -> None:
    """The store-only path reads DATABASE_URL and ignores secrets and the config file."""
    env = {"DATABASE_URL": "sqlite:///x.db", "RELAY_CONFIG": "/nonexistent/relay.toml"}
    assert load_store_settings(env).database_url == "sqlite:///x.db"
    with pytest.raises(ConfigError):
        load_store_settings({"DATABASE_URL": "sqlite://x.db"})


def test_flags_shape_the_default_public_url() -> None:
    """`--port`/`--host` feed the default RELAY_PUBLIC_URL; the variable still wins."""
    assert load_settings(ENV, config_text="", port=8200).public_url == "http://127.0.0.1:8200"
    assert load_settings({**ENV, "PORT": "9000"}, config_text="").public_url.endswith(":9000")
    flagged = load_settings(ENV, config_text="", host="10.1.2.3", port=8201)
    assert (flagged.host, flagged.public_url) == ("10.1.2.3", "http://10.1.2.3:8201")
    explicit = {**ENV, "RELAY_PUBLIC_URL": "https://relay.example.com/"}
    assert load_settings(explicit, config_text="", port=1).public_url == "https://relay.example.com"


def test_dev_mode_records_what_it_generated_and_needs_are_per_command() -> None:
    """RELAY_ENV=dev keeps the values it made up (to print them); a command that needs
    only the signing key does not ask for the API token, and names what it misses."""
    dev = load_settings({"RELAY_ENV": "dev"}, config_text="")
    assert dev.generated == {
        "RELAY_SECRET_KEY": dev.secret_keys[0],
        "RELAY_API_TOKEN": dev.api_token,
    }
    worker = load_settings({"RELAY_SECRET_KEY": "k"}, config_text="", needs={"RELAY_SECRET_KEY"})
    assert worker.api_token is None
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_text="", needs={"RELAY_SECRET_KEY"})
    [problem] = caught.value.problems
    assert problem.startswith("RELAY_SECRET_KEY is not set")


def test_log_format_is_console_on_a_terminal_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto → console on a tty, JSON otherwise; RELAY_LOG_FORMAT overrides."""
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert resolve_format("auto") == "console"
    assert resolve_format("json") == "json"
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert resolve_format("auto") == "json"
    assert resolve_format("console") == "console"


def test_the_readme_configuration_loads_as_written() -> None:
    """Every relay.toml block of the README passes the strict reader: every key it shows
    is known."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    env = {
        **ENV,
        "APIFRAME_API_KEY": "a",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
        "APP_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/x",
    }
    loaded = {name for block in blocks for name in load_settings(env, config_text=block).sinks}
    assert {"team", "archive", "app", "log"} <= loaded
