"""The simulators' injectable clock: a ``ManualClock`` holds task time still until the
test moves it, and the simulators' tasks and callbacks follow it."""

from __future__ import annotations

import asyncio

import pytest

from receiver.events import UpdateState
from simulators.clock import WALL_CLOCK, ManualClock
from tests.helpers.provider_sim import provider_against_simulator


async def test_sleepers_wake_once_the_clock_passes_their_deadline() -> None:
    """``sleep_until`` returns when ``advance`` reaches its deadline, not before."""
    clock = ManualClock(start=0.0)
    early = asyncio.create_task(clock.sleep_until(1.0))
    late = asyncio.create_task(clock.sleep_until(2.0))
    await asyncio.sleep(0)  # both park on the clock
    clock.advance(1.5)
    await asyncio.wait_for(early, timeout=5)
    assert clock.now() == 1.5
    assert not late.done()  # its deadline has not come: nothing can have woken it for good
    clock.advance(0.5)
    await asyncio.wait_for(late, timeout=5)
    await clock.sleep_until(0.5)  # a deadline in the past returns at once


def test_a_manual_clock_does_not_go_back() -> None:
    """``advance`` refuses a negative step."""
    with pytest.raises(ValueError, match="does not go back"):
        ManualClock().advance(-1)


async def test_the_wall_clock_is_monotonic_time() -> None:
    """The default clock reads ``time.monotonic`` and waits with ``asyncio.sleep``."""
    before = WALL_CLOCK.now()
    await WALL_CLOCK.sleep_until(before + 0.01)
    assert WALL_CLOCK.now() >= before + 0.01
    await WALL_CLOCK.sleep_until(before)  # already past


async def test_callbacks_and_polls_follow_the_simulator_clock() -> None:
    """With the clock held still a job stays waiting and sends nothing; moving it past
    the start delay brings the progress callback, past the duration the final one."""
    clock = ManualClock()
    async with provider_against_simulator("useapi", clock=clock) as env:
        spec = env.spec("U1", "grid-delay100-slow500")
        job = await env.provider.submit(spec)
        assert (await env.provider.poll(job.provider_task_id)).progress in (None, 0)
        assert env.bodies_for(spec.job_id) == []  # the sender is parked on the clock
        clock.advance(0.1)
        [progress] = await env.callbacks(spec.job_id, 1)
        assert progress["status"] == "progress"
        clock.advance(0.25)
        midway = await env.provider.poll(job.provider_task_id)
        assert midway.state is UpdateState.PROGRESS
        assert midway.progress is not None
        assert 45 <= midway.progress <= 55  # half of the 500 ms job
        clock.advance(0.25)
        bodies = await env.callbacks(spec.job_id, 2)
        assert [body["status"] for body in bodies] == ["progress", "completed"]
        assert (await env.provider.poll(job.provider_task_id)).state is UpdateState.COMPLETED
