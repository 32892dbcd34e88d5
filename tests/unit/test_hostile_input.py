"""Strict JSON at the edge and redaction by shape (the pure parts of issue 8)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.errors import BadRequest, PayloadError
from receiver.jsonbody import (
    StrictJSONError,
    _loads_exact,
    decode_json,
    decode_nested,
    loads_strict,
)
from receiver.logs import (
    REDACTED,
    _redact_shapes,
    redact_path,
    redact_secrets,
    redact_text,
    register_secrets,
)
from receiver.tokens import CallbackTokens


@pytest.mark.parametrize(
    "body",
    [
        b'{"task_id": NaN}',
        b'{"task_type": -Infinity}',
        b'{"p": Infinity}',
        b'{"p": 1e400}',
        b'{"p": -1e400}',
        b"[1.5e309]",
        b'{"n": ' + b"9" * 4301 + b"}",
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 100 + b"1" + b"}" * 100,
        b'"\\ud800"',
        b"\xff\xfe",
        b"",
        b"{",
    ],
)
def test_refused_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        decode_json(body)


def test_sane_bodies_decode() -> None:
    assert decode_json(b'{"a": [1, 2.5, 1e-400, "x"], "b": null}') == {
        "a": [1, 2.5, 0.0, "x"],
        "b": None,
    }
    assert decode_json(b"[" * 64 + b"]" * 64) is not None  # the depth limit itself


def test_nested_json_is_bounded() -> None:
    assert decode_nested('{"taskId": "p"}', "promptJson") == {"taskId": "p"}
    for text in ("[" * 10_000 + "]" * 10_000, '{"a": NaN}', "x" * 70_000, "[" * 17 + "]" * 17):
        with pytest.raises(PayloadError) as refused:
            decode_nested(text, "promptJson")
        assert refused.value.field == "promptJson"


_JSON_FRAGMENTS = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        '"',
        ":",
        ",",
        " ",
        "\t",
        "\n",
        "-",
        ".",
        "e",
        "E+",
        "0",
        "7",
        "1e400",
        "-1e400",
        "1e-400",
        "NaN",
        "Infinity",
        "true",
        "null",
        "\\u0000",
        "\\ud800",
        "\\ud83d\\ude00",
        "\\",
        "\ufeff",
        "\x01",
        "9" * 19,
        "18446744073709551616",
        "-9223372036854775809",
        "0.1",
        "1" * 18,
    ]
)
_JSON_LIKE = st.lists(st.one_of(_JSON_FRAGMENTS, st.text(max_size=3)), max_size=24).map("".join)
_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def _verdict(parse: Any, text: str | bytes) -> tuple[str, str]:
    try:
        return ("ok", json.dumps(parse(text)))  # tells 1 from 1.0 and -0.0 from 0.0
    except StrictJSONError as exc:
        return ("refused", "too deep" if exc.too_deep else "")


@given(st.one_of(_JSON_LIKE, _JSON_VALUES.map(json.dumps)), st.booleans(), st.sampled_from([3, 64]))
@settings(max_examples=600, deadline=None)
def test_the_orjson_fast_path_decides_as_the_exact_parser(
    text: str, as_bytes: bool, max_depth: int
) -> None:
    """``loads_strict`` takes orjson's answer only where it is the standard library's."""
    data: str | bytes = text.encode("utf-8", "surrogatepass") if as_bytes else text
    fast = _verdict(lambda t: loads_strict(t, max_depth=max_depth), data)
    assert fast == _verdict(lambda t: _loads_exact(t, max_depth), data)


def test_loads_strict_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        loads_strict("NaN")


# -- redaction --------------------------------------------------------------------

TOKEN = CallbackTokens(["k" * 32], max_age_s=60).mint("job_0123456789abcdef01234567", "kie")


@pytest.mark.parametrize(
    "text",
    [
        f"/callbacks/kie/{TOKEN}",
        f"/callbacks/kie/a/b/{TOKEN}",
        f"/v1/jobs/{TOKEN}",
        f"/anything/{TOKEN}/else",
        f"/callbacks/kie?token={TOKEN}",
        f'127.0.0.1:5000 - "POST /callbacks/apiframe/x/{TOKEN} HTTP/1.1" 200',
        f"calling back {TOKEN}.",
    ],
)
def test_tokens_are_redacted_anywhere(text: str) -> None:
    redacted = redact_text(text)
    assert TOKEN not in redacted
    assert REDACTED in redacted
    # the signature part alone is a credential too: nothing of it survives
    assert TOKEN.rsplit(".", 1)[1] not in redacted


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcDEF123456789", "abcDEF123456789"),
        ("sink secret whsec_MDEyMzQ1Njc4OWFiY2RlZg== refused", "MDEyMzQ1Njc4OWFiY2RlZg=="),
        ("GET /hook?api_key=s3cr3tvalue&x=1", "s3cr3tvalue"),
        ("GET /hook?sig=abcdef0123&x=1", "abcdef0123"),
        ("posting to https://hooks.slack.com/services/T000/B000/XXXXYYYY", "T000/B000/XXXXYYYY"),
    ],
)
def test_secret_shapes_are_redacted(text: str, secret: str) -> None:
    assert secret not in redact_text(text)


# text built from the characters and fragments the patterns look for, so that examples
# often come close to (or into) a credential shape
_FRAGMENTS = st.sampled_from(
    [
        "/callbacks/",
        "kie/",
        "eyJ",
        "eyabcd.",
        "whsec_",
        "hooks.slack.com/services/",
        "Bearer ",
        "basic\t",
        "?",
        "&",
        ";",
        "token=",
        "sig=",
        ".",
        "/",
        "=",
        " ",
        '"',
        "x",
    ]
)
_NEAR_SHAPES = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=6)), max_size=12).map("".join)


@given(_NEAR_SHAPES)
@settings(max_examples=400, deadline=None)
def test_the_fast_path_skips_only_texts_no_pattern_changes(text: str) -> None:
    """``redact_text`` skips the substitutions when its trigger finds nothing: it must then
    give exactly what running every substitution gives."""
    assert redact_text(text) == _redact_shapes(text)


_PATH_PARTS = st.sampled_from(
    ["/callbacks/", "apiframe", "kie-ai", "/", "eyJhbGciOi", ".", "~", "_"]
)
_PATHS = st.lists(st.one_of(_PATH_PARTS, st.text(max_size=4)), max_size=10).map("".join)


@given(st.one_of(_PATHS, st.builds("/callbacks/{}/{}".format, st.text(max_size=8), _PATHS)))
@settings(max_examples=400, deadline=None)
def test_redact_path_is_redact_text(path: str) -> None:
    assert redact_path(path) == redact_text(path)


def test_registered_secrets_are_redacted_in_any_field() -> None:
    register_secrets(["configured-value-0042", None, "short"])
    event: dict[str, Any] = {
        "event": "sink said configured-value-0042 was wrong",
        "detail": {"nested": ["configured-value-0042"]},
        "api_key": "whatever",
        "path": f"/callbacks/useapi/{TOKEN}",
    }
    out = redact_secrets(None, "info", event)
    rendered = json.dumps(out)
    assert "configured-value-0042" not in rendered
    assert TOKEN not in rendered
    assert out["api_key"] == REDACTED
    assert out["path"] == "/callbacks/useapi/" + REDACTED
    assert redact_text("short") == "short"  # too short to register: would redact words


def test_a_text_found_clean_is_redacted_once_its_secret_is_registered() -> None:
    """``redact_text`` remembers clean texts; registering a secret forgets them."""
    text = "the sink answered late-registered-0077 twice"
    assert redact_text(text) == text
    assert redact_text(text) == text  # from the memo
    register_secrets(["late-registered-0077"])
    assert redact_text(text) == f"the sink answered {REDACTED} twice"


def test_the_clean_memo_stays_bounded() -> None:
    from receiver import logs

    for n in range(logs._CLEAN_MAX_ITEMS + 10):
        redact_text(f"value-{n}")
    redact_text("x" * (logs._CLEAN_MAX_CHARS + 1))
    assert len(logs._clean) <= logs._CLEAN_MAX_ITEMS
    assert "x" * (logs._CLEAN_MAX_CHARS + 1) not in logs._clean


def test_a_traceback_is_redacted_too() -> None:
    """``configure_logging`` redacts the rendered traceback (after ``format_exc_info``)."""
    from receiver.logs import configure_logging, redact_rendered

    saved = structlog.get_config()
    try:
        configure_logging("json")
        processors = structlog.get_config()["processors"]
    finally:
        structlog.configure(**saved)
    assert processors.index(redact_rendered) > processors.index(
        structlog.processors.format_exc_info
    )
    try:
        raise RuntimeError(f"failed for /callbacks/kie/{TOKEN}")
    except RuntimeError as exc:
        rendered = structlog.processors.format_exc_info(None, "error", {"exc_info": exc})
    out = redact_rendered(None, "error", rendered)
    assert "RuntimeError" in out["exception"]
    assert TOKEN not in out["exception"]
