"""Store ingest throughput: N events from C concurrent coroutines, per backend.

    .venv/bin/python bench/store_ingest.py [--events 2000] [--concurrency 1 8 32]

Runs SQLite (a temporary file, synchronous=FULL) and, when ``RELAY_TEST_PG`` is set,
PostgreSQL (a temporary schema). Each ingest is what a callback commits: one event
and two deliveries. With one coroutine every event pays its own fsync; with many,
SQLite's group commit lets them share one, which the ``per commit`` column shows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from receiver.events import ProviderUpdate, UpdateState, build_event, utcnow
from receiver.store import Ingest, Store
from receiver.store.sqlite import SqliteStore


def records(count: int, run: str) -> Iterator[Ingest]:
    now = utcnow()
    for n in range(count):
        update = ProviderUpdate(f"{run}-{n}", UpdateState.PROGRESS, progress=50)
        event = build_event("bench", update, None, now=now)
        yield Ingest(event=event, job_id=None, job_status=None, sinks=("a", "b"), now=now)


async def ingest_all(store: Store, count: int, concurrency: int) -> float:
    """Seconds to ingest ``count`` events with ``concurrency`` coroutines."""
    pending = records(count, secrets.token_hex(4))

    async def feed() -> None:
        for record in pending:  # the coroutines share one iterator
            if not await store.ingest(record):
                raise RuntimeError("an event was deduplicated: the benchmark is wrong")

    started = time.perf_counter()
    await asyncio.gather(*(feed() for _ in range(concurrency)))
    return time.perf_counter() - started


async def bench_sqlite(count: int, concurrency: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "bench.db")
        await store.migrate()
        stats = store.commit_stats
        batches, operations = stats.batches, stats.operations
        seconds = await ingest_all(store, count, concurrency)
        shared = (stats.operations - operations) / max(stats.batches - batches, 1)
        await store.close()
    return count / seconds, f"{shared:.1f}"


async def bench_postgres(dsn: str, count: int, concurrency: int) -> tuple[float, str]:
    import asyncpg

    from receiver.store.postgres import PostgresStore

    schema = f"relay_bench_{secrets.token_hex(4)}"
    size = max(concurrency, 2)
    store = PostgresStore(dsn, schema=schema, min_size=size, max_size=size)
    try:
        await store.migrate()
        seconds = await ingest_all(store, count, concurrency)
    finally:
        await store.close()
        connection = await asyncpg.connect(dsn)
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await connection.close()
    return count / seconds, "-"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    dsn = os.environ.get("RELAY_TEST_PG")
    print(f"{'backend':<10} {'concurrency':>11} {'events/s':>10} {'per commit':>10}")
    for name in ("sqlite", "postgres"):
        if name == "postgres" and not dsn:
            print("postgres   (skipped: set RELAY_TEST_PG to include it)")
            continue
        rates: dict[int, float] = {}
        for concurrency in args.concurrency:
            if name == "sqlite":
                rate, shared = await bench_sqlite(args.events, concurrency)
            else:
                assert dsn is not None
                rate, shared = await bench_postgres(dsn, args.events, concurrency)
            rates[concurrency] = rate
            print(f"{name:<10} {concurrency:>11} {rate:>10.0f} {shared:>10}")
        low, high = min(rates), max(rates)
        if low != high:
            print(f"{name:<10} concurrency {high} vs {low}: x{rates[high] / rates[low]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
