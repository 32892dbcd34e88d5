"""CPU per delivery of ``relay worker --once`` draining a seeded SQLite store.

    .venv/bin/python bench/worker_cpu.py [--events 20000] [--rounds 2] [--profile 30]
                                         [--log-level info]

``bench/deliver.py`` measures rates at the sink against a bare aiohttp loop; this one
reads only the worker's CPU, which moves least on a shared machine: N committed events,
one pending delivery each to ``bench/servers.py``'s sink, drained by ``relay worker --once``
(the same ``DeliveryWorker`` as the daemon), less what a drain of an empty store costs
(start-up, imports, the once-pass's other work). ``--profile N`` runs the last round
under cProfile and prints its top N functions; ``--log-level warning`` shows what the
per-attempt log line costs (compare with ``info``).
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import harness


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def drain_cpu_s(
    work: Path, config: Path, sink_url: str, events: int, profile: Path | None
) -> float:
    """CPU seconds of one ``relay worker --once`` over ``events`` seeded deliveries."""
    async with harness.fresh_database("sqlite", work) as database_url:
        await harness.seed_events(database_url, events, ["hook"])
        await harness.sink_reset(sink_url)
        env = harness.relay_env(database_url, config, "external", harness.free_port())
        profiled = ["-m", "cProfile", "-o", str(profile)] if profile else []
        command = [sys.executable, *profiled, "-m", "receiver", "worker", "--once"]
        before = _children_cpu_s()
        with (work / "worker-once.log").open("wb") as log:
            worker = await asyncio.create_subprocess_exec(
                *command,
                *("--budget", "600"),
                env=env,
                cwd=harness.ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            if await worker.wait() != 0:
                raise RuntimeError(f"relay worker --once failed: see {log.name}")
        spent = _children_cpu_s() - before
    arrived = (await harness.sink_get(sink_url, "stats"))["distinct"]
    if arrived < events:
        print(f"  ! only {arrived} of {events} events reached the sink")
    return spent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    print(f"## worker CPU: {args.events} deliveries, {harness.machine()}")
    per_delivery_us: list[float] = []
    with harness.workdir() as tmp:
        work = Path(tmp)
        async with harness.served("sink", work) as (_sink, sink_url):
            config = harness.write_config(work, sink_url)
            config.write_text(f'[relay]\nlog_level = "{args.log_level}"\n' + config.read_text())
            for n in range(args.rounds):
                empty_s = await drain_cpu_s(work, config, sink_url, 0, None)
                last = n == args.rounds - 1
                profile = work / "worker.pstats" if args.profile and last else None
                spent_s = await drain_cpu_s(work, config, sink_url, args.events, profile)
                per_delivery_us.append(1e6 * (spent_s - empty_s) / args.events)
                label = " (under cProfile)" if profile else ""
                print(f"  round {n + 1}: {per_delivery_us[-1]:.0f} µs per delivery{label}")
                if profile:
                    pstats.Stats(str(profile)).sort_stats("tottime").print_stats(args.profile)
    unprofiled = per_delivery_us[:-1] if args.profile else per_delivery_us
    if unprofiled:
        median = statistics.median(unprofiled)
        print(f"median {median:.0f} µs of CPU per delivery (log level {args.log_level})")


if __name__ == "__main__":
    asyncio.run(main())
