"""Settings: environment + TOML, interpolation, and every problem named at once."""

from __future__ import annotations

import pytest

from receiver.errors import ConfigError
from receiver.settings import DeliveryMode, load_settings, unused_sinks

ENV = {"RELAY_SECRET_KEY": "k1, k2", "RELAY_API_TOKEN": "t"}


def test_defaults_and_key_rotation_list() -> None:
    """With only the two secrets set, defaults apply and keys split on commas."""
    settings = load_settings(ENV, config_text="")
    assert settings.secret_keys == ("k1", "k2")
    assert settings.database_url == "sqlite:///./relay.db"
    assert settings.delivery_mode is DeliveryMode.INPROCESS
    assert settings.retry_schedule_s == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.callback_max_age_s == 7 * 24 * 3600


def test_interpolates_environment_variables() -> None:
    """${VAR} inside the TOML reads the environment."""
    text = """
[providers.apiframe]
api_key = "${APIFRAME_API_KEY}"
[sinks.app]
type = "http"
url = "https://example.com/${HOOK_PATH}"
"""
    env = {**ENV, "APIFRAME_API_KEY": "secret-key", "HOOK_PATH": "hooks/x"}
    settings = load_settings(env, config_text=text)
    assert settings.providers["apiframe"].api_key == "secret-key"
    assert settings.providers["apiframe"].base_url == "https://api.apiframe.pro"
    assert settings.sinks["app"].options["url"] == "https://example.com/hooks/x"


def test_every_problem_is_named_in_one_run() -> None:
    """Unknown sink type, a route naming an unknown sink, a provider without its key and
    an unset ${VAR} all appear in one ConfigError."""
    text = """
[providers.apiframe]
base_url = "http://x"
[sinks.team]
type = "pigeon"
[sinks.app]
type = "http"
url = "${NOT_SET_ANYWHERE}"
[[routes]]
sinks = ["app", "ghost"]
"""
    with pytest.raises(ConfigError) as caught:
        load_settings(ENV, config_text=text)
    problems = "\n".join(caught.value.problems)
    assert "providers.apiframe: api_key is required" in problems
    assert "sinks.team: unknown sink type 'pigeon'" in problems
    assert "${NOT_SET_ANYWHERE} is not set" in problems
    assert "names unknown sink 'ghost'" in problems


def test_missing_secrets_are_errors_outside_dev_mode() -> None:
    """Without RELAY_SECRET_KEY / RELAY_API_TOKEN the relay refuses, unless RELAY_ENV=dev."""
    with pytest.raises(ConfigError) as caught:
        load_settings({}, config_text="")
    assert len(caught.value.problems) == 2
    dev = load_settings({"RELAY_ENV": "dev"}, config_text="")
    assert dev.secret_keys
    assert dev.api_token
    assert any("dev mode" in w for w in dev.warnings)


def test_bad_values_are_reported() -> None:
    """Wrong delivery mode, log format, store URL and retry schedule are reported."""
    env = {
        **ENV,
        "RELAY_DELIVERY_MODE": "carrier-pigeon",
        "RELAY_LOG_FORMAT": "xml",
        "DATABASE_URL": "mysql://x",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env, config_text="[delivery]\nretry_schedule_s = []\n")
    problems = "\n".join(caught.value.problems)
    for fragment in ("RELAY_DELIVERY_MODE", "RELAY_LOG_FORMAT", "DATABASE_URL", "retry_schedule_s"):
        assert fragment in problems


def test_unused_sinks_are_listed() -> None:
    """A sink no route names is reported by unused_sinks."""
    text = """
[sinks.a]
type = "file"
path = "/tmp/a"
[sinks.b]
type = "file"
path = "/tmp/b"
[[routes]]
sinks = ["a"]
"""
    assert unused_sinks(load_settings(ENV, config_text=text)) == ["b"]


def test_invalid_toml_is_a_problem_not_a_crash() -> None:
    """A TOML syntax error becomes a named problem."""
    with pytest.raises(ConfigError) as caught:
        load_settings(ENV, config_text="[sinks\n")
    assert "not valid TOML" in caught.value.problems[0]


def test_default_values_in_interpolation() -> None:
    """${VAR:-default} falls back when VAR is unset (an optional endpoint, say)."""
    text = '[sinks.a]\ntype = "file"\npath = "${EVENTS_PATH:-/tmp/events.jsonl}"\n'
    assert load_settings(ENV, config_text=text).sinks["a"].options["path"] == "/tmp/events.jsonl"
    env = {**ENV, "EVENTS_PATH": "/data/e.jsonl"}
    assert load_settings(env, config_text=text).sinks["a"].options["path"] == "/data/e.jsonl"


def test_durations_accept_the_spelling_without_unit() -> None:
    """`poll_after`/`deadline`/`retry_schedule` (as the issue texts say) work like the
    `_s` keys and do not leak into the provider's or sink's own options."""
    text = """
[providers.apiframe]
api_key = "k"
poll_after = 0.5
deadline = 60
[sinks.a]
type = "file"
path = "/tmp/a"
retry_schedule = [0, 1]
timeout = 3
"""
    settings = load_settings(ENV, config_text=text)
    provider = settings.providers["apiframe"]
    assert (provider.poll_after_s, provider.deadline_s) == (0.5, 60)
    assert "poll_after" not in provider.options
    sink = settings.sinks["a"]
    assert sink.retry_schedule_s == (0, 1)
    assert sink.timeout_s == 3
    assert "timeout" not in sink.options
