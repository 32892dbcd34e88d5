"""Batcher: items submitted while a batch is written share the next one; each caller
returns once its own item is written, or gets its batch's error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from receiver.batching import Batcher


class Writer:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.gate = asyncio.Event()
        self.gate.set()

    async def write_many(self, items: Sequence[int]) -> None:
        await self.gate.wait()
        await asyncio.sleep(0.01)  # a store trip
        if self.fail_on in items:
            raise RuntimeError("database is locked")
        self.batches.append(list(items))


async def test_concurrent_items_share_batches_in_order() -> None:
    """Items submitted together go in one batch; an item alone goes at once, and the
    ones that arrive while it is written go together in the next batch."""
    writer = Writer()
    batcher = Batcher(writer.write_many)
    await asyncio.gather(*(batcher.submit(n) for n in range(20)))
    assert writer.batches == [list(range(20))]
    first = asyncio.create_task(batcher.submit(100))
    await asyncio.sleep(0.002)  # the writer has taken it
    await asyncio.gather(first, *(batcher.submit(n) for n in range(101, 150)))
    assert writer.batches[1:] == [[100], list(range(101, 150))]
    assert (batcher.batches, batcher.items) == (3, 70)


async def test_max_batch_splits_a_large_burst() -> None:
    writer = Writer()
    batcher = Batcher(writer.write_many, max_batch=10)
    await asyncio.gather(*(batcher.submit(n) for n in range(35)))
    assert [len(b) for b in writer.batches] == [10, 10, 10, 5]


async def test_a_failing_batch_fails_only_its_callers() -> None:
    writer = Writer(fail_on=3)
    batcher = Batcher(writer.write_many, max_batch=4)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(9)), return_exceptions=True)
    failed = [n for n, r in enumerate(results) if isinstance(r, RuntimeError)]
    assert failed == [0, 1, 2, 3]  # the batch with 3; the others were written
    assert writer.batches == [[4, 5, 6, 7], [8]]


async def test_a_cancelled_caller_still_gets_its_item_written() -> None:
    """Cancelling a waiting caller does not unwrite its item; flush waits for it."""
    writer = Writer()
    writer.gate.clear()
    batcher = Batcher(writer.write_many)
    caller = asyncio.create_task(batcher.submit(7))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    writer.gate.set()
    await batcher.flush()
    assert writer.batches == [[7]]
