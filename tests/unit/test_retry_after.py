"""The one ``Retry-After`` parser shared by the provider adapters and the sinks."""

from __future__ import annotations

import httpx
import pytest

from handlers.providers.base import retry_after_s
from handlers.retry_after import MAX_RETRY_AFTER_S, parse_retry_after, retry_after


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("999999", MAX_RETRY_AFTER_S),
        (None, None),
        ("", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_delta_seconds_are_read_and_clamped(value: str | None, seconds: float | None) -> None:
    """Delta-seconds are clamped to 0 … a day; anything else is None (the caller's default)."""
    assert parse_retry_after(value) == seconds


def test_a_response_without_the_header_has_none() -> None:
    """The header is read case-insensitively off a response; no header is None."""
    assert retry_after(httpx.Response(429, headers={"Retry-After": "4"})) == 4.0
    assert retry_after(httpx.Response(429)) is None


def test_providers_wait_whole_seconds_at_least_one() -> None:
    """The provider form rounds up to whole seconds, at least 1, else its default."""
    assert retry_after_s(httpx.Response(429, headers={"retry-after": "2.1"})) == 3
    assert retry_after_s(httpx.Response(429, headers={"retry-after": "0"})) == 1
    assert retry_after_s(httpx.Response(429, headers={"retry-after": "x"}), default=9) == 9
    assert retry_after_s(httpx.Response(429)) == 30
