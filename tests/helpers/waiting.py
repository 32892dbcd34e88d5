"""Wait for a condition instead of sleeping a fixed time and hoping it came true."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 10.0,
    *,
    interval_s: float = 0.01,
    message: str = "",
) -> None:
    """Return as soon as ``predicate()`` (plain or async) is true; fail the test with
    ``message`` if it is still false after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                outcome = predicate()
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                if outcome:
                    return
                await asyncio.sleep(interval_s)
    except TimeoutError:
        raise AssertionError(message or f"condition not met within {timeout_s} s") from None
