"""The simulators' clock: task timing (delays, durations, progress) reads it, so a test
can hold time still and move it on purpose instead of racing the wall clock.

``WallClock`` (the default) is ``time.monotonic``. ``ManualClock`` moves only when the
test calls ``advance``; callbacks waiting for a task's time are woken then. A task with
a pending callback only finishes once the clock passes its time, so a test using a
``ManualClock`` advances it before draining the simulator.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and a way to wait for a point in them."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class WallClock:
    """Real time: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self.now()))


class ManualClock:
    """Time that stands still until ``advance``; use within one event loop."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._moved = asyncio.Event()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every ``sleep_until`` now due."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def sleep_until(self, deadline: float) -> None:
        while self._now < deadline:
            await self._moved.wait()


WALL_CLOCK = WallClock()
