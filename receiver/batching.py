"""``Batcher``: group commit at the application level.

Callers ``await batcher.submit(item)``; items submitted while a batch is being written
wait and go together in the next one (up to ``max_batch``). Under light load an item is
written at once, alone; under heavy load one store trip carries many. Each caller gets
its own batch's result: returns once its item is committed, or raises its batch's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Writes items through ``write_many`` (one call per batch)."""

    def __init__(
        self, write_many: Callable[[Sequence[T]], Awaitable[None]], *, max_batch: int = 256
    ) -> None:
        self._write_many = write_many
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # for tests and benchmarks: items / batches is the sharing
        self.items = 0

    async def submit(self, item: T) -> None:
        """Return once ``item`` is written. Cancelling the caller does not unwrite it:
        the batch it joined is written anyway."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a cancelled caller leaves no unread error
        self._pending.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all(), name="relay-batcher")
        await asyncio.shield(future)

    async def _write_all(self) -> None:
        batch: list[tuple[T, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    await self._write_many([item for item, _ in batch])
                except Exception as exc:
                    _settle(batch, exc)
                else:
                    _settle(batch, None)
                self.batches += 1
                self.items += len(batch)
        except BaseException as exc:  # cancelled: nobody may wait forever
            _settle(batch + self._pending, RuntimeError(f"batch writer stopped: {exc!r}"))
            self._pending.clear()
            raise
        finally:
            self._writer = None

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (shutdown)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)


def _settle(batch: Sequence[tuple[object, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
