"""``Batcher``: group commit at the application level.

Callers ``await batcher.submit(item)`` (or ``add`` it without waiting); items submitted
while a batch is being written wait and go together in the next one (up to
``max_batch``). Under light load an item is written at once, alone (or after
``linger_s``, if set: a batch then waits that long for company, unless it fills up or
``flush`` is called); under heavy load one store trip carries many. Each caller gets its
own batch's result: returns once its item is committed, or raises its batch's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Writes items through ``write_many`` (one call per batch)."""

    def __init__(
        self,
        write_many: Callable[[Sequence[T]], Awaitable[None]],
        *,
        max_batch: int = 256,
        linger_s: float = 0.0,
        on_error: Callable[[Exception, int], None] | None = None,
    ) -> None:
        self._write_many = write_many
        self._on_error = on_error  # told of a failed batch holding ``add``ed items
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._hurry: asyncio.Future[None] | None = None  # ends a linger early
        self._flushing = 0
        self._pending: list[tuple[T, asyncio.Future[None] | None]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # for tests and benchmarks: items / batches is the sharing
        self.items = 0

    async def submit(self, item: T) -> None:
        """Return once ``item`` is written. Cancelling the caller does not unwrite it:
        the batch it joined is written anyway."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a cancelled caller leaves no unread error
        self._enqueue(item, future)
        await asyncio.shield(future)

    def add(self, item: T) -> None:
        """Queue ``item`` without waiting for it (no future per item): a failed batch goes
        to ``on_error``; ``flush`` waits for it all."""
        self._enqueue(item, None)

    def _enqueue(self, item: T, future: asyncio.Future[None] | None) -> None:
        self._pending.append((item, future))
        if self._hurry is not None and len(self._pending) >= self._max_batch:
            _resolve(self._hurry)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all(), name="relay-batcher")

    async def _write_all(self) -> None:
        batch: list[tuple[T, asyncio.Future[None] | None]] = []
        try:
            while self._pending:
                if self._linger_s > 0 and not self._flushing:
                    await self._linger()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    await self._write_many([item for item, _ in batch])
                except Exception as exc:
                    _settle(batch, exc)
                    self._report(exc, batch)
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

    def _report(
        self, exc: Exception, batch: Sequence[tuple[T, asyncio.Future[None] | None]]
    ) -> None:
        unwatched = sum(1 for _, future in batch if future is None)
        if unwatched and self._on_error is not None:
            self._on_error(exc, unwatched)

    async def _linger(self) -> None:
        """Wait ``linger_s`` for more items, or until the batch is full or flushed."""
        if len(self._pending) >= self._max_batch:
            return
        loop = asyncio.get_running_loop()
        hurry = self._hurry = loop.create_future()
        timer = loop.call_later(self._linger_s, _resolve, hurry)
        try:
            await hurry
        finally:
            timer.cancel()
            self._hurry = None

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (shutdown), lingering no more."""
        self._flushing += 1
        try:
            if self._hurry is not None:
                _resolve(self._hurry)
            while self._writer is not None:
                await asyncio.shield(self._writer)
        finally:
            self._flushing -= 1


def _settle(
    batch: Sequence[tuple[object, asyncio.Future[None] | None]], error: Exception | None
) -> None:
    for _, future in batch:
        if future is None or future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
