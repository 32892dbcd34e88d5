"""Property: every provider parser, given any JSON in any documented field, returns a
``ProviderUpdate`` or raises ``PayloadError`` — never another exception.

Each case starts from a real payload (tests/fixtures) and replaces one documented field
(top level or inside ``data``/``result``) with an arbitrary JSON value, or wraps the
whole thing in something else. Example counts are bounded: the module runs in seconds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.providers import PROVIDERS, apiframe, apimart, imaginepro, kie, useapi
from handlers.providers.base import ProviderConfig
from receiver.errors import PayloadError
from receiver.events import ProviderUpdate, UpdateState
from tests.conftest import load_fixture

EXAMPLES = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Parser = Callable[[Any], ProviderUpdate]


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


#: texts providers put in fields, and texts that broke parsers before
_TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "45",
            "100%",
            " 7 % ",
            "-3",
            "101",
            "1e400",
            "inf",
            "NaN",
            "9" * 400,
            "0x10",
            "DONE",
            "done",
            "completed",
            "FAILURE",
            "processing",
            "IN_PROGRESS",
            "https://cdn.example/x.png",
            '{"taskId": "p"}',
            json.dumps({"resultUrls": ["https://cdn.example/a.png"]}),
            _deep(10_000),
            '{"a":' * 5_000,
            "\ud800",
        ]
    ),
)
#: values that broke parsers before (each tried in every field, deterministically)
HOSTILE: list[Any] = [
    10**309,
    -(10**309),
    10**4000,
    1e-400,
    123456789012345678901234567890.5,
    1e308,
    -1,
    101,
    99.6,
    True,
    "9" * 400,
    "1e400",
    "inf",
    "NaN",
    "-5%",
    "250%",
    _deep(10_000),
    '{"taskId":' * 5_000,
    json.dumps({"taskId": _deep(3_000)}),
    "x" * 20_000,
    "task\x00id",
    [[[[[[[[[[[]]]]]]]]]]],
    {"resultUrls": [{"resultUrl": 5}]},
    [],
    {},
    None,
    "",
]
_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**320), max_value=10**320),
    st.sampled_from([10**309, -(10**309), 0, 1, 2, 3, 100, 101, -1, 200, 400]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e-400, 0.0, 99.6, 123456789012345678901234567890.5]),
)
_HOSTILE = st.sampled_from(HOSTILE)
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXTS, _HOSTILE)
JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _config(name: str) -> ProviderConfig:
    return ProviderConfig(name=name, api_key="k", base_url="http://127.0.0.1:9")


def _callback_parser(name: str) -> Parser:
    """The provider's own ``parse_callback`` method (built as the relay builds it)."""
    provider = PROVIDERS[name](_config(name), httpx.AsyncClient())
    return provider.parse_callback


#: (case id, parser, base payload): callback parsers and poll-answer parsers
CASES: list[tuple[str, Parser, Any]] = [
    (
        "apiframe-callback",
        _callback_parser("apiframe"),
        load_fixture("apiframe", "callback_upscale_1x"),
    ),
    (
        "apiframe-progress",
        _callback_parser("apiframe"),
        load_fixture("apiframe", "callback_progress"),
    ),
    ("apiframe-poll", apiframe.parse_task, load_fixture("apiframe", "callback_upscale_alt")),
    (
        "imaginepro-callback",
        _callback_parser("imaginepro"),
        load_fixture("imaginepro", "callback_done"),
    ),
    (
        "imaginepro-poll",
        imaginepro.parse_message,
        load_fixture("imaginepro", "synth_callback_processing"),
    ),
    ("kie-callback", _callback_parser("kie"), load_fixture("kie", "callback_success")),
    ("kie-poll", kie.parse_record_info, load_fixture("kie", "poll_record_info")),
    (
        "useapi-callback",
        _callback_parser("useapi"),
        load_fixture("useapi", "synth_callback_completed"),
    ),
    ("useapi-poll", useapi.parse_job, load_fixture("useapi", "synth_callback_failed")),
    ("apimart-poll", apimart.parse_task, load_fixture("apimart", "poll_imagine")),
    ("apimart-unified", apimart.parse_task, load_fixture("apimart", "poll_task_unified")),
]
IDS = [case[0] for case in CASES]


def _field_paths(payload: Any) -> list[tuple[str, ...]]:
    """Every documented field: the top-level keys and those one or two levels down."""
    paths: list[tuple[str, ...]] = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            paths.append((key,))
            if isinstance(value, dict):
                for inner, deeper in value.items():
                    paths.append((key, inner))
                    if isinstance(deeper, dict):
                        paths.extend((key, inner, k) for k in deeper)
    return paths


def _replace(payload: Any, path: tuple[str, ...], value: Any) -> Any:
    changed = copy.deepcopy(payload)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


#: the fields that hold each provider's task id: never read from a float
ID_FIELDS = {
    "apiframe": {"task_id"},
    "imaginepro": {"messageId"},
    "kie": {"taskId", "task_id"},
    "useapi": {"jobid"},
    "apimart": {"id"},
}


def _check(
    parser: Parser, payload: Any, replaced: tuple[tuple[str, ...], Any] | None = None
) -> None:
    try:
        update = parser(payload)
    except PayloadError:
        return
    if replaced is not None:
        name, path, value = replaced
        id_fields = ID_FIELDS[name.split("-")[0]]
        assert not (path[-1] in id_fields and isinstance(value, float)), (
            f"a float {path[-1]} became the id {update.provider_task_id!r}"
        )
    assert isinstance(update, ProviderUpdate)
    assert isinstance(update.provider_task_id, str)
    assert update.provider_task_id
    assert update.progress is None or 0 <= update.progress <= 100
    assert isinstance(update.state, UpdateState)
    assert all(isinstance(url, str) for url in update.image_urls)
    assert "\x00" not in update.provider_task_id
    for text in (update.parent_id, update.correlation_id, update.error_message):
        assert text is None or isinstance(text, str)
    for key in (update.parent_id, update.correlation_id):
        assert key is None or "\x00" not in key  # both end up in store lookups


@pytest.mark.parametrize(("name", "parser", "base"), CASES, ids=IDS)
def test_fixture_itself_parses(name: str, parser: Parser, base: Any) -> None:
    assert isinstance(parser(base), ProviderUpdate)


@pytest.mark.parametrize(("name", "parser", "base"), CASES, ids=IDS)
def test_hostile_values_in_every_field(name: str, parser: Parser, base: Any) -> None:
    tried = 0
    for path in _field_paths(base):
        for value in HOSTILE:
            _check(parser, _replace(base, path, value), (name, path, value))
            tried += 1
    print(f"{name}: {tried} hostile payloads, none raised anything but PayloadError")


@pytest.mark.parametrize(("name", "parser", "base"), CASES, ids=IDS)
@EXAMPLES
@given(data=st.data(), value=JSON)
def test_any_json_in_any_documented_field(
    name: str, parser: Parser, base: Any, data: st.DataObject, value: Any
) -> None:
    path = data.draw(st.sampled_from(_field_paths(base)), label="field")
    _check(parser, _replace(base, path, value), (name, path, value))


@pytest.mark.parametrize(("name", "parser", "base"), CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(value=JSON)
def test_any_json_as_the_whole_body(name: str, parser: Parser, base: Any, value: Any) -> None:
    _check(parser, value)
    _check(parser, {**base, "extra": value} if isinstance(base, dict) else value)
