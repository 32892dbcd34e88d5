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


async def test_a_linger_gathers_items_into_one_batch() -> None:
    """With ``linger_s`` the first item waits for company: items added over the next
    moments go in the same batch, and nothing is written before the linger ends."""
    writer = Writer()
    batcher = Batcher(writer.write_many, linger_s=5.0)  # flush ends it early
    batcher.add(1)
    await asyncio.sleep(0.01)
    batcher.add(2)
    await asyncio.sleep(0.01)
    assert writer.batches == []  # still lingering
    await batcher.flush()
    assert writer.batches == [[1, 2]]


async def test_a_full_batch_or_a_flush_ends_the_linger() -> None:
    writer = Writer()
    batcher = Batcher(writer.write_many, max_batch=3, linger_s=10.0)
    for n in range(3):
        batcher.add(n)
    await asyncio.wait_for(_written(writer, 1), timeout=1.0)  # full: no 10 s wait
    batcher.add(3)
    await asyncio.wait_for(batcher.flush(), timeout=1.0)  # flushed: no 10 s wait either
    assert writer.batches == [[0, 1, 2], [3]]


async def test_added_items_that_fail_are_reported_with_their_count() -> None:
    """``add`` has no caller to raise to: a failed batch goes to ``on_error`` with the
    number of added items in it (awaited ones get the error as before)."""
    writer = Writer(fail_on=2)
    failures: list[tuple[str, int]] = []
    batcher = Batcher(writer.write_many, on_error=lambda exc, n: failures.append((str(exc), n)))
    writer.gate.clear()
    awaited = asyncio.ensure_future(batcher.submit(3))  # queued before the writer runs
    batcher.add(1)
    batcher.add(2)
    await asyncio.sleep(0)
    writer.gate.set()
    await batcher.flush()
    with pytest.raises(RuntimeError, match="locked"):
        await awaited
    assert failures == [("database is locked", 2)]
    assert writer.batches == []


async def _written(writer: Writer, batches: int) -> None:
    while len(writer.batches) < batches:
        await asyncio.sleep(0.005)
