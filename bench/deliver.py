"""Delivery throughput: ``relay worker`` draining a backlog vs a bare aiohttp loop.

    .venv/bin/python bench/deliver.py [--events 3000] [--rounds 2] [--workers 1]

For each store (SQLite; PostgreSQL too when ``RELAY_TEST_PG`` is set): N committed events,
each with one pending delivery to an http sink, are drained by a real ``relay worker`` into
a local sink (``bench/servers.py sink``); then a bare aiohttp loop with the sink's
concurrency POSTs N bodies of the same size to the same sink. A and B alternate ``rounds``
times. Rates are measured at the sink (first to last arrival), the same way for both.

``--workers N`` drains with N ``relay worker`` processes that share the sink's 8 in flight
(``max_concurrency`` 8 / N each): the scale-out the store's leases allow, against the same
one-process bare loop.

Each side's CPU per delivery is printed too (the worker's from ``wait4``, less what a worker
that starts and stops on an empty store spends; the bare loop's from ``process_time``):
on a shared machine it moves less than the rates, which also depend on the sink's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import harness
from harness import print_table


async def bare_loop(sink_url: str, count: int, concurrency: int) -> None:
    """The stack's own limit: aiohttp POSTs with ``concurrency`` in flight."""
    import aiohttp

    body = json.dumps(
        {"id": "evt_" + "x" * 26, "type": "upscale.completed", "data": {"pad": "x" * 400}}
    ).encode()
    queue = iter(range(count))
    async with aiohttp.ClientSession() as session:

        async def loop() -> None:
            for n in queue:
                headers = {"content-type": "application/json", "webhook-id": f"bare-{n}"}
                async with session.post(f"{sink_url}/hooks", data=body, headers=headers) as r:
                    await r.read()

        await asyncio.gather(*(loop() for _ in range(concurrency)))


def rate(stats: dict[str, float]) -> float:
    span = stats["last"] - stats["first"]
    return (stats["distinct"] - 1) / span if span > 0 else float("nan")


async def relay_round(
    backend: str, work: Path, config: Path, sink_url: str, count: int, workers: int = 1
) -> tuple[float, harness.Usage, int]:
    """``workers`` ``relay worker`` processes drain ``count`` seeded events; their CPU
    summed, their peak RSS the largest."""
    async with harness.fresh_database(backend, work) as database_url:
        await harness.seed_events(database_url, count, ["hook"])
        await harness.sink_reset(sink_url)
        procs = [harness.relay_worker(database_url, config, work) for _ in range(workers)]
        try:
            stats = await harness.wait_sink(sink_url, count, timeout_s=30, proc=procs[0])
        finally:
            usages = [proc.stop() for proc in procs]
        usage = harness.Usage(sum(u.cpu_s for u in usages), max(u.max_rss_mb for u in usages))
        _events, states = await harness.store_counts(database_url)
    if stats["distinct"] < count:
        print(f"  ! only {stats['distinct']} of {count} events reached the sink")
    return rate(stats), usage, states.get("delivered", 0)


async def bare_round(sink_url: str, count: int) -> tuple[float, float]:
    """(rate at the sink, ms of this process's CPU per request: the bare loop's)."""
    await harness.sink_reset(sink_url)
    started = time.process_time()
    await bare_loop(sink_url, count, harness.SINK_CONCURRENCY)
    cpu_ms = 1000 * (time.process_time() - started) / count
    return rate(await harness.sink_get(sink_url, "stats")), cpu_ms


async def start_up_cpu_s(backend: str, work: Path, config: Path) -> float:
    """CPU seconds of a ``relay worker`` that starts on an empty store and stops: what
    each round's worker spends besides its deliveries."""
    async with harness.fresh_database(backend, work) as database_url:
        await harness.seed_events(database_url, 0, ["hook"])
        worker = harness.relay_worker(database_url, config, work)
        try:
            await harness.wait_ready_worker(worker)
        finally:
            usage = worker.stop()
    return usage.cpu_s


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=(1, 2, 4, 8),
        help="relay worker processes, sharing the sink's 8 in flight (a scale-out try)",
    )
    args = parser.parse_args()
    workers = args.workers
    print(f"## deliver: {args.events} events, {workers} relay worker(s), {harness.machine()}")
    rows = []
    with harness.workdir() as tmp:
        work = Path(tmp)
        async with harness.served("sink", work) as (_sink, sink_url):
            config = harness.write_config(
                work, sink_url, harness.SINK_CONCURRENCY // workers, name="deliver"
            )
            for backend in harness.backends():
                relay_rates: list[float] = []
                bare_rates: list[float] = []
                cpu_ms: list[float] = []
                bare_cpu_ms: list[float] = []
                rss: list[float] = []
                start_up_s = await start_up_cpu_s(backend, work, config)
                for _ in range(args.rounds):
                    started = time.monotonic()
                    value, usage, delivered = await relay_round(
                        backend, work, config, sink_url, args.events, workers
                    )
                    relay_rates.append(value)
                    work_s = max(usage.cpu_s - workers * start_up_s, 0)
                    cpu_ms.append(1000 * work_s / max(delivered, 1))
                    rss.append(usage.max_rss_mb)
                    round_rate, round_cpu_ms = await bare_round(sink_url, args.events)
                    bare_rates.append(round_rate)
                    bare_cpu_ms.append(round_cpu_ms)
                    print(
                        f"  {backend}: relay {value:.0f}/s, bare {bare_rates[-1]:.0f}/s "
                        f"({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
                relay_rate = statistics.median(relay_rates)
                bare_rate = statistics.median(bare_rates)
                rows.append(
                    [
                        backend,
                        " / ".join(f"{r:.0f}" for r in relay_rates),
                        " / ".join(f"{r:.0f}" for r in bare_rates),
                        f"{relay_rate / bare_rate:.2f}",
                        f"{statistics.median(cpu_ms):.3f} / {statistics.median(bare_cpu_ms):.3f}",
                        f"{statistics.median(bare_cpu_ms) / statistics.median(cpu_ms):.2f}",
                        f"{max(rss):.0f}",
                    ]
                )
    print()
    print_table(
        [
            "store",
            "relay worker deliveries/s (each round)",
            f"bare aiohttp loop, {harness.SINK_CONCURRENCY} concurrent, /s",
            "ratio (target ≥ 0.5)",
            "CPU ms per delivery: worker (start-up taken out) / bare loop",
            "CPU ratio",
            "worker peak RSS MB",
        ],
        rows,
    )


if __name__ == "__main__":
    asyncio.run(main())
