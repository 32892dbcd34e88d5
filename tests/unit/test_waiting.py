"""The tests' ``wait_until`` helper: returns once the condition holds, fails after the
timeout otherwise."""

from __future__ import annotations

import pytest

from tests.helpers.waiting import wait_until


async def test_returns_once_a_plain_or_async_predicate_holds() -> None:
    """Polls until true; an async predicate is awaited."""
    calls: list[int] = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_until(third_time, interval_s=0)
    assert len(calls) == 3

    async def at_once() -> bool:
        return True

    await wait_until(at_once)


async def test_a_condition_that_never_holds_fails_with_its_message() -> None:
    """After the timeout the test fails with the message given."""
    with pytest.raises(AssertionError, match="never"):
        await wait_until(lambda: False, timeout_s=0.05, message="never")
