"""Callback sent → event at the sink, under paced load.

    .venv/bin/python bench/latency.py [--duration 10] [--rates 200 1000] [--rounds 2]
                                      [--modes inprocess external]

``relay serve`` (default in-process delivery, and ``external`` with a ``relay worker``
beside it; one http sink: ``bench/servers.py sink``) receives callbacks on a fixed
schedule (open loop: a slow answer does not slow the sender, and latency counts from the
scheduled send time): per-job callbacks at the first rate, account-level ones at the
others, ``duration`` seconds each. The baseline, alternating with the relay, is a bare
starlette endpoint that forwards each callback to the same sink with aiohttp: the stack's
own latency. Prints p50 / p99 / max and how many arrived. SQLite, and PostgreSQL when
``RELAY_TEST_PG`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import harness
from harness import pct, print_table


async def measure(
    base_url: str, sink_url: str, callbacks: list[harness.Callback], rate: float
) -> tuple[list[float], int, int]:
    """(latencies in ms of the events that arrived, arrived, sent), after a warm-up."""
    warm_up, _failed = await harness.run_paced(base_url, harness.account_callbacks(20), 100)
    await wait_arrivals(sink_url, set(warm_up), timeout_s=5)  # none may land after the reset
    await harness.sink_reset(sink_url)
    sent, _failed = await harness.run_paced(base_url, callbacks, rate)
    arrivals = await wait_arrivals(sink_url, set(sent), timeout_s=15)
    latencies = [1000 * (arrivals[key] - at) for key, at in sent.items() if key in arrivals]
    return latencies, len(latencies), len(callbacks)


async def wait_arrivals(sink_url: str, keys: set[str], timeout_s: float) -> dict[str, float]:
    """The sink's arrivals once every one of ``keys`` is there, or when none came for
    ``timeout_s`` (counting distinct ids instead would be fooled by stragglers of an
    earlier run)."""
    last_change, missing = time.monotonic(), len(keys) + 1
    while True:
        arrivals: dict[str, float] = await harness.sink_get(sink_url, "arrivals")
        left = len(keys - arrivals.keys())
        if not left:
            return arrivals
        if left != missing:
            missing, last_change = left, time.monotonic()
        if time.monotonic() - last_change > timeout_s:
            return arrivals
        await asyncio.sleep(0.05)


async def relay_case(
    backend: str,
    work: Path,
    config: Path,
    sink_url: str,
    rate: float,
    kind: str,
    count: int,
    mode: str = "inprocess",
) -> tuple[list[float], int, int]:
    """``relay serve`` in ``mode``; with ``external``, a ``relay worker`` beside it."""
    async with harness.fresh_database(backend, work) as database_url:
        if kind == "per-job":
            callbacks = await harness.seed_jobs(database_url, count)
        else:
            callbacks = harness.account_callbacks(count)
        async with harness.relay_serve(database_url, config, mode, work) as (_p, base):
            if mode != "external":
                return await measure(base, sink_url, callbacks, rate)
            worker = harness.relay_worker(database_url, config, work)
            try:
                await harness.wait_ready_worker(worker)
                return await measure(base, sink_url, callbacks, rate)
            finally:
                worker.stop()


def row(name: str, latencies: list[float], arrived: int, sent: int) -> list[object]:
    return [
        name,
        f"{pct(latencies, 0.5):.1f}",
        f"{pct(latencies, 0.99):.1f}",
        f"{max(latencies, default=float('nan')):.1f}",
        f"{arrived}/{sent}",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[200.0, 1000.0])
    parser.add_argument("--rounds", type=int, default=2)
    # external: `relay serve` only verifies and commits, a `relay worker` delivers
    parser.add_argument("--modes", nargs="+", default=["inprocess", "external"])
    args = parser.parse_args()
    print(f"## latency: paced callbacks, {args.duration:g} s per rate, {harness.machine()}")
    rows = []
    with harness.workdir() as tmp:
        work = Path(tmp)
        async with harness.served("sink", work) as (_sink, sink_url):
            config = harness.write_config(work, sink_url)
            async with harness.served("bare", work, sink_url + "/hooks") as (_b, bare_url):
                for backend in harness.backends():
                    for round_ in range(1, args.rounds + 1):
                        for n, rate in enumerate(args.rates):
                            kind = "per-job" if n == 0 else "account"
                            count = int(rate * args.duration)
                            bare = await measure(
                                bare_url, sink_url, harness.account_callbacks(count), rate
                            )
                            rows.append(row(f"bare forwarder {rate:g}/s (round {round_})", *bare))
                            for mode in args.modes:
                                relay = await relay_case(
                                    backend, work, config, sink_url, rate, kind, count, mode
                                )
                                name = f"relay {mode} {backend} {kind} {rate:g}/s (round {round_})"
                                rows.append(row(name, *relay))
                                print(f"  {name}: p99 {pct(relay[0], 0.99):.1f} ms", flush=True)
    print()
    print_table(["case", "p50 ms", "p99 ms", "max ms", "arrived"], rows)
    print("targets: 200/s p99 ≤ 50 ms; 1000/s every event delivered, p99 ≤ 1000 ms")


if __name__ == "__main__":
    asyncio.run(main())
