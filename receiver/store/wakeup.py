"""``WorkSignal``: how a store's ``wait_for_work`` learns that work may exist."""

from __future__ import annotations

import asyncio
import weakref


class WorkSignal:
    """A wake-up that is never lost while its waiter is busy.

    ``notify()`` bumps a generation and wakes every waiter. Each waiting task
    remembers the generation it last returned at, so a task that was busy (claiming,
    delivering) when ``notify()`` ran returns at once from its next ``wait()``
    instead of sleeping through work that arrived meanwhile. Several tasks (the
    worker and the poller) may wait on one signal; none swallows another's wake-up.
    A task's first ``wait()`` has nothing to compare with and simply waits (unless the
    task called ``arm()`` before).

    Loop-bound: call both methods from the event loop's thread.
    """

    def __init__(self) -> None:
        self._generation = 0
        self._seen: weakref.WeakKeyDictionary[asyncio.Task[object], int] = (
            weakref.WeakKeyDictionary()
        )
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def waiting(self) -> bool:
        """Whether a task is waiting now."""
        return bool(self._waiters)

    def notify(self) -> None:
        """Work may exist: wake every waiter, now and (for busy tasks) later."""
        self._generation += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def arm(self) -> None:
        """From now on, remember ``notify()`` calls for the current task (if it is not
        remembered yet): its next ``wait()`` then returns at once for any of them."""
        task = asyncio.current_task()
        if task is not None and task not in self._seen:
            self._seen[task] = self._generation

    async def wait(self, timeout_s: float) -> None:
        """Return on the next ``notify()`` (or a missed one), else after ``timeout_s``."""
        task = asyncio.current_task()
        seen = self._seen.get(task) if task is not None else None
        generation = self._generation
        if task is not None:
            self._seen[task] = generation
        if seen is not None and seen < generation:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout=max(timeout_s, 0.0))
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)
            if task is not None:
                self._seen[task] = self._generation
