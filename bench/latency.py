"""Callback sent → event at the sink, under paced load.

    .venv/bin/python bench/latency.py [--duration 10] [--rates 200 1000] [--rounds 2]

``relay serve`` (default in-process delivery, one http sink: ``bench/servers.py sink``)
receives callbacks on a fixed schedule (open loop: a slow answer does not slow the sender,
and latency counts from the scheduled send time): per-job callbacks at the first rate,
account-level ones at the others, ``duration`` seconds each. The baseline, alternating with
the relay, is a bare starlette endpoint that forwards each callback to the same sink with
aiohttp: the stack's own latency. Prints p50 / p99 / max and how many arrived. SQLite, and
PostgreSQL when ``RELAY_TEST_PG`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import harness
from harness import pct, print_table


async def measure(
    base_url: str, sink_url: str, callbacks: list[harness.Callback], rate: float
) -> tuple[list[float], int, int]:
    """(latencies in ms of the events that arrived, arrived, sent), after a warm-up."""
    await harness.run_paced(base_url, harness.account_callbacks(20), 100)
    await harness.wait_sink(sink_url, 20, timeout_s=5)
    await harness.sink_reset(sink_url)
    sent, _failed = await harness.run_paced(base_url, callbacks, rate)
    await harness.wait_sink(sink_url, len(sent), timeout_s=15)
    arrivals = await harness.sink_get(sink_url, "arrivals")
    latencies = [1000 * (arrivals[key] - at) for key, at in sent.items() if key in arrivals]
    return latencies, len(latencies), len(callbacks)


async def relay_case(
    backend: str, work: Path, config: Path, sink_url: str, rate: float, kind: str, count: int
) -> tuple[list[float], int, int]:
    async with harness.fresh_database(backend, work) as database_url:
        if kind == "per-job":
            callbacks = await harness.seed_jobs(database_url, count)
        else:
            callbacks = harness.account_callbacks(count)
        async with harness.relay_serve(database_url, config, "inprocess", work) as (_p, base):
            return await measure(base, sink_url, callbacks, rate)


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
                            relay = await relay_case(
                                backend, work, config, sink_url, rate, kind, count
                            )
                            name = f"relay {backend} {kind} {rate:g}/s (round {round_})"
                            rows.append(row(name, *relay))
                            print(f"  {name}: p99 {pct(relay[0], 0.99):.1f} ms", flush=True)
    print()
    print_table(["case", "p50 ms", "p99 ms", "max ms", "arrived"], rows)
    print("targets: 200/s p99 ≤ 50 ms; 1000/s every event delivered, p99 ≤ 1000 ms")


if __name__ == "__main__":
    asyncio.run(main())
