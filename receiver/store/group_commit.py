"""``GroupCommitter``: one thread owns a SQLite connection and commits in batches
(``InlineCommitter``: the same batches, run on the event loop's own thread).

Coroutines submit operations (callables taking the connection); the thread takes
the first queued operation, drains whatever else is queued right now (up to
``max_batch``), runs them all in one transaction, each inside its own SAVEPOINT so
a failing operation rolls back alone and gets its exception, then COMMITs once and
resolves every future. Concurrent callbacks therefore share one fsync.

A batch made only of reads runs in a deferred transaction and takes no write lock;
any write makes it ``BEGIN IMMEDIATE`` so the lock (shared with other processes
through ``busy_timeout``) is taken up front and no statement fails half-way.

A write submitted with ``durable=False`` (a worker's claim or delivery outcome: losing
one to a power cut means a re-claim or a re-delivery with the same ``webhook-id``, which
at-least-once allows) commits with ``synchronous=NORMAL``: in WAL mode that survives a
process crash and skips the fsync. A batch holding any durable write is fsynced
(``synchronous=FULL``), and so is everything committed before it.

An operation submitted with ``savepoint=False`` skips its SAVEPOINT/RELEASE pair (a third
of the statements of a callback's ingest): it promises to raise only before its first
write. Should it raise after writing all the same, its batch fails as a whole and is
rolled back, so nothing half-done is ever committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

LOCK_RETRY_S = 0.002  # InlineCommitter: how often a locked batch tries again

Operation = Callable[[sqlite3.Connection], T]


@dataclass(slots=True)
class _Job(Generic[T]):
    run: Operation[T]
    write: bool
    durable: bool
    savepoint: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


@dataclass(slots=True)
class CommitStats:
    """Counters for benchmarks and tests: ``operations / batches`` is the sharing."""

    batches: int = 0
    operations: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Outcome:
    job: _Job[Any]
    value: Any = None
    error: BaseException | None = None


class _Batches:
    """Runs a batch of jobs in one transaction on a connection (both committers)."""

    stats: CommitStats
    _synchronous: str

    def _execute(
        self, connection: sqlite3.Connection, batch: list[_Job[Any]], *, begun: bool = False
    ) -> list[_Outcome]:
        """Run ``batch`` in one transaction (``begun``: the caller has begun it); every
        job's outcome (none is settled yet)."""
        outcomes: list[_Outcome] = []
        try:
            if not begun:
                write = any(job.write for job in batch)
                self._set_synchronous(connection, durable=any(job.durable for job in batch))
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            for job in batch:
                outcomes.append(self._run_one(connection, job))
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                # a failing ROLLBACK must not kill the writer thread (every caller would hang)
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            outcomes = [_Outcome(job, error=exc) for job in batch]
        self.stats.batches += 1
        self.stats.operations += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        return outcomes

    def _set_synchronous(self, connection: sqlite3.Connection, *, durable: bool) -> None:
        wanted = "FULL" if durable else "NORMAL"
        if wanted != self._synchronous:
            connection.execute(f"PRAGMA synchronous = {wanted}")
            self._synchronous = wanted

    @staticmethod
    def _run_one(connection: sqlite3.Connection, job: _Job[Any]) -> _Outcome:
        if not job.savepoint:
            changes = connection.total_changes
            try:
                return _Outcome(job, value=job.run(connection))
            except Exception as exc:
                if connection.total_changes != changes:  # raised after writing: undo all
                    raise RuntimeError("a store operation failed half-way") from exc
                return _Outcome(job, error=exc)
        connection.execute("SAVEPOINT op")
        try:
            value = job.run(connection)
        except Exception as exc:
            connection.execute("ROLLBACK TO op")
            connection.execute("RELEASE op")
            return _Outcome(job, error=exc)
        connection.execute("RELEASE op")
        return _Outcome(job, value=value)


@dataclass
class GroupCommitter(_Batches):
    """Runs operations on ``connect()``'s connection in a dedicated thread."""

    connect: Callable[[], sqlite3.Connection]
    max_batch: int = 256
    name: str = "relay-sqlite-writer"
    stats: CommitStats = field(default_factory=CommitStats)
    _queue: queue.SimpleQueue[_Job[Any] | None] = field(  # None: stop
        default_factory=queue.SimpleQueue, init=False
    )
    _thread: threading.Thread | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)
    _broken: BaseException | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _synchronous: str = field(default="FULL", init=False)  # the connection's setting

    async def submit(
        self, run: Operation[T], *, write: bool = True, durable: bool = True, savepoint: bool = True
    ) -> T:
        """Run ``run(connection)`` in the next batch; return its result once committed
        (and fsynced, unless ``durable`` is false)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._broken is not None:
                raise self._broken
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
            self._queue.put(_Job(run, write, write and durable, savepoint, loop, future))
        return await future

    async def close(self) -> None:
        """Finish queued work, close the connection and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            await asyncio.to_thread(thread.join)

    # -- the writer thread ---------------------------------------------------------

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            connection = self.connect()
        except BaseException as exc:
            self._fail_all(exc)
            return
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                self._run_batch(connection, batch)
        finally:
            connection.close()

    def _run_batch(self, connection: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        _deliver_all(self._execute(connection, batch))

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            self._broken = exc
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _deliver(_Outcome(item, error=exc))


@dataclass
class InlineCommitter(_Batches):
    """``GroupCommitter``'s interface without its thread: a batch runs on the event loop's
    own thread, right after the loop iteration its first operation was submitted in
    (what else was submitted meanwhile joins it).

    What ``open_store`` gives every process: blocking the loop for a batch (~1-3 ms,
    its fsync included) costs less than handing every operation to a thread and back,
    which makes the two threads fight over the GIL. Measured: 18-20 % less CPU per
    delivery in ``relay worker``; in ``relay serve`` 2,340-2,400 → 3,130-3,620
    callbacks/s in-process and +5-10 % in external mode (bench/ingest.py). A COMMIT on a
    helper thread, so the loop runs on during the fsync, measured 10-15 % fewer
    in-process: the helper then waits for the busy loop's GIL to return (switch
    interval), and every commit behind it waits too.

    The loop never sleeps in SQLite's busy handler: while another process holds the
    file's write lock, a batch is retried every ``LOCK_RETRY_S`` (the loop goes on with
    its deliveries meanwhile) until the connection's ``busy_timeout`` has passed, and
    then fails as a locked ``BEGIN`` would have. Finer steps than the busy handler's
    (1, 2, 5 … 25, 50, 100 ms) also get the lock sooner from a web that commits
    back-to-back.
    """

    connect: Callable[[], sqlite3.Connection]
    max_batch: int = 256
    stats: CommitStats = field(default_factory=CommitStats)
    _pending: list[_Job[Any]] = field(default_factory=list, init=False)
    _connection: sqlite3.Connection | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)
    _broken: BaseException | None = field(default=None, init=False)
    _synchronous: str = field(default="FULL", init=False)
    _lock_wait_s: float = field(default=5.0, init=False)  # the connection's busy_timeout
    _locked_since: float | None = field(default=None, init=False)
    _retry: asyncio.TimerHandle | None = field(default=None, init=False)

    async def submit(
        self, run: Operation[T], *, write: bool = True, durable: bool = True, savepoint: bool = True
    ) -> T:
        """As ``GroupCommitter.submit``."""
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Job(run, write, write and durable, savepoint, loop, future))
        if len(self._pending) == 1 and self._retry is None:
            loop.call_soon(self._run_pending)
        return await future

    def _run_pending(self, *, block: bool = False) -> None:
        self._retry = None
        while self._pending:
            connection = self._connection or self._open()
            if connection is None:
                return
            batch = self._pending[: self.max_batch]
            write = any(job.write for job in batch)
            began = self._begin(connection, batch, block=block) if write else "begun"
            if began == "later":
                return  # locked by another process: retried soon
            if began == "failed":
                continue  # it left the queue with its error: on with the rest
            del self._pending[: len(batch)]
            _settle_all(self._execute(connection, batch, begun=write))

    def _open(self) -> sqlite3.Connection | None:
        try:
            connection = self.connect()
            row = connection.execute("PRAGMA busy_timeout").fetchone()
            self._lock_wait_s = int(row[0]) / 1000
            connection.execute("PRAGMA busy_timeout = 0")  # see the class docstring
        except BaseException as exc:  # as the thread's: every operation fails
            self._broken = exc
            batch, self._pending = self._pending, []
            _settle_all([_Outcome(job, error=exc) for job in batch])
            return None
        self._connection = connection
        return connection

    def _begin(
        self, connection: sqlite3.Connection, batch: list[_Job[Any]], *, block: bool
    ) -> Literal["begun", "later", "failed"]:
        """``BEGIN IMMEDIATE`` for ``batch``: begun, retried ``later`` (a timer is set), or
        ``failed`` (the batch has left the queue with its error)."""
        self._set_synchronous(connection, durable=any(job.durable for job in batch))
        if block:
            connection.execute(f"PRAGMA busy_timeout = {int(self._lock_wait_s * 1000)}")
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            now = time.monotonic()
            since = self._locked_since = self._locked_since or now
            if not block and _locked(exc) and now - since < self._lock_wait_s:
                loop = asyncio.get_running_loop()
                self._retry = loop.call_later(LOCK_RETRY_S, self._run_pending)
                return "later"
            self._locked_since = None
            del self._pending[: len(batch)]
            _settle_all([_Outcome(job, error=exc) for job in batch])
            return "failed"
        finally:
            if block:
                connection.execute("PRAGMA busy_timeout = 0")
        self._locked_since = None
        return "begun"

    async def close(self) -> None:
        """Finish queued work (waiting for the lock as SQLite would) and close."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        self._run_pending(block=True)
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _locked(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or (
        "locked" in str(exc)
    )


#: what ``SqliteStore`` runs its operations through
Committer = GroupCommitter | InlineCommitter


def _deliver(outcome: _Outcome) -> None:
    _deliver_all([outcome])


def _deliver_all(outcomes: list[_Outcome]) -> None:
    """Hand the results to their loops: one ``call_soon_threadsafe`` per loop and batch,
    not per operation. Each one writes to the loop's wake-up socket, and that write
    gives up the GIL: on a busy loop, getting it back took this thread ~0.2 ms a time."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome.job.loop, []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_all, settled)


def _settle_all(outcomes: list[_Outcome]) -> None:
    for outcome in outcomes:
        _settle(outcome)


def _settle(outcome: _Outcome) -> None:
    future = outcome.job.future
    if future.done():  # the caller was cancelled; the work itself is done or undone
        return
    if outcome.error is not None:
        future.set_exception(outcome.error)
    else:
        future.set_result(outcome.value)
