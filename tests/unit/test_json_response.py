"""``json_response``: orjson's bytes where it can, ``JSONResponse``'s otherwise; the same
JSON either way."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from receiver.routes.common import json_response

_KEYS = st.one_of(st.text(max_size=6), st.integers(-5, 5))
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@given(_VALUES)
@settings(max_examples=300, deadline=None)
def test_the_same_json_as_starlettes(value: Any) -> None:
    fast = json_response(value)
    assert json.loads(fast.body) == json.loads(JSONResponse(value).body)
    assert fast.headers["content-type"] == "application/json"


def test_the_callback_answer_is_byte_for_byte_starlettes() -> None:
    body = {"ok": True, "event_id": "evt_1", "duplicate": False, "note": "é✓"}
    assert json_response(body, 202).body == JSONResponse(body).body
    assert json_response(body, 202).status_code == 202
