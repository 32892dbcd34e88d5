"""``WorkSignal``: a wake-up is never lost, including one that comes before a task's
first wait once the task has armed."""

from __future__ import annotations

import asyncio
import time

from receiver.store.wakeup import WorkSignal


async def test_a_notify_after_arm_makes_the_first_wait_return_at_once() -> None:
    signal = WorkSignal()
    signal.arm()
    signal.notify()  # e.g. committed while the PostgreSQL listener was still connecting
    started = time.monotonic()
    await signal.wait(10)
    assert time.monotonic() - started < 1


async def test_without_arm_the_first_wait_waits_for_the_next_notify() -> None:
    signal = WorkSignal()
    signal.notify()
    waiter = asyncio.create_task(signal.wait(10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    signal.notify()
    await asyncio.wait_for(waiter, 2)


async def test_arm_does_not_forget_what_a_task_has_seen() -> None:
    signal = WorkSignal()
    await signal.wait(0)
    signal.notify()
    signal.arm()  # already remembered: the missed notify still counts
    started = time.monotonic()
    await signal.wait(10)
    assert time.monotonic() - started < 1
