"""SQLite specifics the contract cannot see: URLs, pragmas, group commit, several processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.errors import ConfigError, IdempotencyMismatch
from receiver.store import open_store
from receiver.store.group_commit import GroupCommitter, InlineCommitter
from receiver.store.sqlite import SqliteStore
from tests.store.factories import make_ingest, make_job


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "relay.db")
    await store.migrate()
    yield store
    await store.close()


def test_from_url_accepts_relative_and_absolute_paths(tmp_path: Path) -> None:
    """sqlite:///rel is relative to the working directory, sqlite:////abs is absolute."""
    assert SqliteStore.from_url("sqlite:///./relay.db").path == Path("relay.db")
    assert SqliteStore.from_url(f"sqlite:///{tmp_path}/r.db").path == tmp_path / "r.db"
    opened = open_store(f"sqlite:///{tmp_path}/r.db")
    assert isinstance(opened, SqliteStore)
    assert isinstance(opened._writer, InlineCommitter)  # every process: see its docstring
    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:", "mysql://x"):
        with pytest.raises(ConfigError):
            SqliteStore.from_url(bad)


async def test_connection_is_durable_and_shareable(sqlite_store: SqliteStore) -> None:
    """The writer runs in WAL mode with synchronous=FULL and a busy timeout."""

    def pragmas(c: sqlite3.Connection) -> tuple[str, int, int]:
        return (
            c.execute("PRAGMA journal_mode").fetchone()[0],
            c.execute("PRAGMA synchronous").fetchone()[0],
            c.execute("PRAGMA busy_timeout").fetchone()[0],
        )

    assert await sqlite_store._writer.submit(pragmas) == ("wal", 2, 5000)


def _sqlite_temp_files() -> list[str]:
    """This process's open SQLite temporary files (created, then unlinked at once)."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if "etilqs_" in target:
                found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
async def test_a_large_savepointed_operation_keeps_its_journal_in_memory(
    sqlite_store: SqliteStore,
) -> None:
    """Every operation runs inside a SAVEPOINT, whose journal keeps a copy of each page it
    changes; past 64 KiB SQLite spills that journal to a temporary file, one pwrite per
    page (measured: 9 % of ``relay worker``'s CPU, in ``record_outcomes``). With
    ``temp_store = MEMORY`` it stays in memory."""

    def fill(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE scratch (k TEXT PRIMARY KEY, v TEXT)")
        c.executemany(
            "INSERT INTO scratch VALUES (?, ?)", ((f"{n:08d}", "x" * 300) for n in range(3000))
        )

    def rewrite(c: sqlite3.Connection) -> list[str]:
        c.execute("UPDATE scratch SET v = 'y' || v")  # every page changes: ~1 MB journalled
        return _sqlite_temp_files()

    await sqlite_store._writer.submit(fill)
    assert await sqlite_store._writer.submit(rewrite) == []
    temp_store = await sqlite_store._writer.submit(
        lambda c: c.execute("PRAGMA temp_store").fetchone()[0], write=False
    )
    assert temp_store == 2  # MEMORY


async def test_concurrent_operations_share_commits(sqlite_store: SqliteStore) -> None:
    """Operations queued together commit in one transaction: fewer commits than operations."""
    before = sqlite_store.commit_stats.batches
    results = await asyncio.gather(
        *(sqlite_store.ingest(make_ingest(None, task=f"t{n}")) for n in range(200))
    )
    assert all(results)
    commits = sqlite_store.commit_stats.batches - before
    assert commits <= 20
    assert sqlite_store.commit_stats.largest_batch > 1


async def test_a_failing_operation_rolls_back_alone(sqlite_store: SqliteStore) -> None:
    """In one batch, a failing operation gets its exception and the others still commit."""
    gate = threading.Event()
    blocker = asyncio.ensure_future(sqlite_store._writer.submit(lambda c: gate.wait(5)))
    await asyncio.sleep(0.02)
    first = make_job()
    await_first = asyncio.ensure_future(
        sqlite_store.create_job(first, idempotency_key="k", request_hash="a")
    )
    await asyncio.sleep(0)

    def half_written_then_fails(c: sqlite3.Connection) -> None:
        c.execute("DELETE FROM jobs")
        raise sqlite3.IntegrityError("boom")

    batch = asyncio.gather(
        sqlite_store.create_job(make_job(), idempotency_key="k", request_hash="b"),
        sqlite_store._writer.submit(half_written_then_fails),
        sqlite_store.ingest(make_ingest(first)),
        return_exceptions=True,
    )
    await asyncio.sleep(0.02)
    gate.set()
    await blocker
    assert (await await_first)[1]
    mismatch, failed, ingested = await batch
    assert isinstance(mismatch, IdempotencyMismatch)
    assert isinstance(failed, sqlite3.IntegrityError)
    assert ingested is True
    assert sqlite_store.commit_stats.largest_batch >= 4
    job = await sqlite_store.get_job(first.id)
    assert job is not None
    assert job.status.value == "completed"


async def test_without_a_savepoint_a_failure_before_writing_fails_alone(
    sqlite_store: SqliteStore,
) -> None:
    """``savepoint=False``: an operation that raises before writing gets its exception and
    the batch commits; one that raises after writing fails its whole batch, rolled back."""
    gate = threading.Event()

    def refuses(c: sqlite3.Connection) -> None:
        c.execute("SELECT COUNT(*) FROM jobs").fetchone()
        raise PermissionError("401")

    def half_written_then_fails(c: sqlite3.Connection) -> None:
        c.execute("DELETE FROM jobs")
        raise ValueError("boom")

    async def batch_of(*operations: Any) -> list[Any]:
        blocker = asyncio.ensure_future(sqlite_store._writer.submit(lambda c: gate.wait(5)))
        await asyncio.sleep(0.02)
        queued = asyncio.gather(*operations, return_exceptions=True)
        await asyncio.sleep(0.02)
        gate.set()
        await blocker
        gate.clear()
        return list(await queued)

    kept = make_job()
    refused, created = await batch_of(
        sqlite_store._writer.submit(refuses, savepoint=False), sqlite_store.create_job(kept)
    )
    assert isinstance(refused, PermissionError)
    assert created[1]
    assert await sqlite_store.get_job(kept.id) is not None
    lost = make_job()
    half, other = await batch_of(
        sqlite_store._writer.submit(half_written_then_fails, savepoint=False),
        sqlite_store.create_job(lost),
    )
    assert isinstance(half, RuntimeError)
    assert isinstance(half.__cause__, ValueError)
    assert isinstance(other, RuntimeError)  # its batch was rolled back with it
    assert await sqlite_store.get_job(kept.id) is not None  # the DELETE was undone
    assert await sqlite_store.get_job(lost.id) is None


async def test_worker_writes_skip_the_fsync_and_durable_ones_restore_it(
    sqlite_store: SqliteStore,
) -> None:
    """``durable=False`` (claims, outcomes) commits with synchronous=NORMAL; the next
    durable write is back on FULL (2: FULL, 1: NORMAL)."""

    def level(c: sqlite3.Connection) -> int:
        return int(c.execute("PRAGMA synchronous").fetchone()[0])

    assert await sqlite_store._writer.submit(level, durable=False) == 1
    assert await sqlite_store._writer.submit(level) == 2
    assert await sqlite_store._writer.submit(level, write=False, durable=False) == 1


async def test_a_cancelled_caller_does_not_stop_the_writer(sqlite_store: SqliteStore) -> None:
    """Cancelling a coroutine that waits for its commit leaves the store working."""
    gate = threading.Event()
    blocked = asyncio.ensure_future(sqlite_store._writer.submit(lambda c: gate.wait(5)))
    await asyncio.sleep(0.01)
    blocked.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    job = make_job()
    await sqlite_store.create_job(job)
    assert await sqlite_store.get_job(job.id) == job


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    """After close() (idempotent, also for a store never used) operations raise."""
    unused = SqliteStore(tmp_path / "unused.db")
    await unused.close()
    store = SqliteStore(tmp_path / "relay.db")
    await store.migrate()
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.ping()


async def test_unopenable_file_fails_every_operation(tmp_path: Path) -> None:
    """A path SQLite cannot open fails the first and every later operation clearly."""
    (tmp_path / "file").write_text("not a directory")
    store = SqliteStore(tmp_path / "file" / "relay.db")
    with pytest.raises(OSError):  # noqa: PT011 - the platform picks the subclass
        await store.migrate()
    with pytest.raises(OSError):  # noqa: PT011
        await store.ping()
    await store.close()


async def test_group_committer_surfaces_begin_failures(tmp_path: Path) -> None:
    """If a batch cannot even begin, every operation in it gets that error."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 10")
        return connection

    committer = GroupCommitter(connect)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await committer.submit(lambda c: c.execute("INSERT INTO t VALUES (1)"))
        holder.execute("COMMIT")
        await committer.submit(lambda c: c.execute("INSERT INTO t VALUES (2)").rowcount)
    finally:
        await committer.close()
        holder.close()


_OTHER_PROCESS = """
import asyncio, sys
from receiver.store.sqlite import SqliteStore
from tests.store.factories import make_ingest

async def main() -> None:
    store = SqliteStore(sys.argv[1])
    await store.migrate()
    await asyncio.gather(*(store.ingest(make_ingest(None, task=f"other-{n}")) for n in range(40)))
    await store.close()

asyncio.run(main())
"""


async def test_two_processes_share_one_file(tmp_path: Path) -> None:
    """A second process writing the same file concurrently loses nothing (busy_timeout)."""
    path = tmp_path / "relay.db"
    store = SqliteStore(path)
    await store.migrate()
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OTHER_PROCESS, str(path), cwd=Path(__file__).parents[2]
    )
    for n in range(40):
        await store.ingest(make_ingest(None, task=f"mine-{n}"))
    assert await other.wait() == 0
    assert sum((await store.backlog_by_sink()).values()) == 160
    await store.close()


async def test_fresh_file_opened_by_two_stores_at_once(tmp_path: Path) -> None:
    """Two stores (processes) opening a fresh file at the same moment both start: the
    switch to WAL is retried on "database is locked" (before, ~1 start in 12 failed)."""
    for attempt in range(60):
        path = tmp_path / f"fresh-{attempt}.db"
        stores = [SqliteStore(path), SqliteStore(path)]
        try:
            versions = await asyncio.gather(*(store.migrate() for store in stores))
        finally:
            for store in stores:
                await store.close()
        assert versions[0] == versions[1] >= 1


async def test_inline_committer_runs_on_the_loop_and_shares_a_batch(tmp_path: Path) -> None:
    """``InlineCommitter`` (``relay worker``): operations submitted in one loop iteration
    commit together on the loop's own thread; a failing one fails alone; closed refuses."""
    store = SqliteStore(tmp_path / "inline.db", inline=True)
    await store.migrate()
    before = store.commit_stats.batches
    threads = await asyncio.gather(
        *(store._writer.submit(lambda c: threading.get_ident(), write=False) for _ in range(5))
    )
    assert set(threads) == {threading.get_ident()}
    assert store.commit_stats.batches == before + 1

    def fails(c: sqlite3.Connection) -> None:
        raise sqlite3.IntegrityError("boom")

    job = make_job()
    failed, created = await asyncio.gather(
        store._writer.submit(fails), store.create_job(job), return_exceptions=True
    )
    assert isinstance(failed, sqlite3.IntegrityError)
    assert not isinstance(created, BaseException)
    assert await store.get_job(job.id) is not None
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.get_job(job.id)


async def test_inline_committer_fails_every_operation_when_it_cannot_open(
    tmp_path: Path,
) -> None:
    (tmp_path / "dir.db").mkdir()  # a directory where the file should be
    store = SqliteStore(tmp_path / "dir.db", inline=True)
    for _ in range(2):
        with pytest.raises(sqlite3.OperationalError):
            await store.migrate()
    await store.close()


async def test_inline_committer_waits_for_a_locked_file_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    """Another process holding the write lock: the inline batch is retried while the
    loop goes on, and commits once the lock is free; held past ``busy_timeout``, it fails
    as a locked BEGIN does."""
    path = tmp_path / "locked.db"
    store = SqliteStore(path, inline=True, busy_timeout_ms=300)
    await store.migrate()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    job = make_job()
    created = asyncio.ensure_future(store.create_job(job))
    ticks = 0
    for _ in range(10):  # the loop keeps running while the write waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 10
    assert not created.done()
    holder.execute("COMMIT")
    assert (await asyncio.wait_for(created, timeout=2))[1]
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.create_job(make_job())
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert await store.get_job(job.id) is not None
    await store.close()


async def test_another_process_commit_wakes_a_waiting_store(tmp_path: Path) -> None:
    """``wait_for_work`` on SQLite returns soon after another connection (another
    process: a web, for a separate ``relay worker``) commits work, not at its timeout;
    with nothing committed it waits."""
    path = tmp_path / "two.db"
    worker_side = SqliteStore(path, inline=True)
    web_side = SqliteStore(path)
    await worker_side.migrate()
    try:
        await worker_side.wait_for_work(0.15)  # the watcher has looked once
        started = time.monotonic()
        await worker_side.wait_for_work(0.3)
        assert time.monotonic() - started >= 0.25  # nothing committed: the full wait
        waiting = asyncio.ensure_future(worker_side.wait_for_work(10))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await web_side.ingest(make_ingest(None, task="elsewhere"))
        await asyncio.wait_for(waiting, timeout=2)
        assert time.monotonic() - started < 1
    finally:
        await web_side.close()
        await worker_side.close()


@given(
    st.lists(st.tuples(st.integers(0, 50), st.one_of(st.none(), st.integers(0, 80))), max_size=30)
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_next_due_walks_the_index_to_the_same_answer(rows: list[tuple[int, int | None]]) -> None:
    """``_next_due_us`` (two index walks) equals the plain scan it replaced,
    ``MIN(MAX(next_attempt_at, COALESCE(lease_until, next_attempt_at)))``, for any mix
    of due times and leases (expired, running, none)."""
    from receiver.store.sqlite import _next_due_us

    c = sqlite3.connect(":memory:")
    c.execute(
        "CREATE TABLE deliveries (seq INTEGER PRIMARY KEY, state TEXT,"
        " next_attempt_at INTEGER, lease_until INTEGER)"
    )
    c.execute("CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending'")
    c.executemany(
        "INSERT INTO deliveries (state, next_attempt_at, lease_until) VALUES ('pending', ?, ?)",
        rows,
    )
    c.execute("INSERT INTO deliveries (state, next_attempt_at) VALUES ('delivered', 0)")
    scan = c.execute(
        "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, next_attempt_at)))"
        " FROM deliveries WHERE state = 'pending'"
    ).fetchone()[0]
    assert _next_due_us(c) == scan
