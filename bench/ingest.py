"""Callback ingest: ``relay serve`` under load vs a bare starlette endpoint, same uvicorn.

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 64] [--rounds 2]

``wrk -t1 -c64 -d10s`` (the built-in aiohttp generator when wrk is not installed) sends
valid Apiframe callbacks, each for a task of its own: per-job ones (``/callbacks/apiframe/
{token}`` with the job's secret, jobs seeded in the store) and account-level ones
(``/callbacks/apiframe`` with the account secret). Targets: the relay in each delivery mode
(``external``: verify + commit + 200; ``inprocess``: the same process also delivers to a
local sink) and a bare starlette endpoint under the same uvicorn settings; A and B alternate
``rounds`` times. Afterwards every run is checked: each acknowledged callback is a committed
event, and each committed event reached the sink (in external mode a ``relay worker`` is
started afterwards to drain). SQLite, and PostgreSQL when ``RELAY_TEST_PG`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from dataclasses import dataclass
from pathlib import Path

import harness
from harness import Load, print_table

MAX_RPS = 8000  # seeded callbacks per second of load: distinct tasks, never repeated


@dataclass
class Run:
    load: Load
    rss_mb: float
    check: str
    cpu_ms: float = 0.0  # the relay process's CPU per acknowledged callback (all threads)


async def relay_run(
    backend: str, mode: str, kind: str, work: Path, config: Path, sink_url: str, args: object
) -> Run:
    duration: float = args.duration  # type: ignore[attr-defined]
    connections: int = args.connections  # type: ignore[attr-defined]
    count = int(MAX_RPS * duration)
    async with harness.fresh_database(backend, work) as database_url:
        if kind == "per-job":
            callbacks = await harness.seed_jobs(database_url, count)
        else:
            callbacks = harness.account_callbacks(count)
        await harness.sink_reset(sink_url)
        async with harness.relay_serve(database_url, config, mode, work) as (proc, base):
            load = await harness.run_load(base, callbacks, connections, duration)
            if mode == "inprocess":
                events, _ = await harness.store_counts(database_url)
                await harness.wait_sink(sink_url, events, timeout_s=20, proc=proc)
        usage = proc.usage
        if mode == "external":
            worker = harness.relay_worker(database_url, config, work)
            events, _ = await harness.store_counts(database_url)
            try:
                await harness.wait_sink(sink_url, events, timeout_s=20, proc=worker)
            finally:
                worker.stop()
        check = await verify(database_url, sink_url, load, count)
    return Run(load, usage.max_rss_mb, check, 1000 * usage.cpu_s / max(load.ok, 1))


async def verify(database_url: str, sink_url: str, load: Load, available: int) -> str:
    """Every 2xx is a committed event (ok ≤ events) and every event reached the sink."""
    events, states = await harness.store_counts(database_url)
    arrived = (await harness.sink_get(sink_url, "stats"))["distinct"]
    problems = []
    if load.requests > available:
        problems.append(f"{load.requests - available} repeats")
    if load.ok > events:
        problems.append(f"{load.ok} acked > {events} events")
    if arrived < events or set(states) != {"delivered"}:
        problems.append(f"{arrived}/{events} at sink, {states}")
    return "; ".join(problems) or f"ok ({load.ok} acked, {events} events delivered)"


async def bare_run(bare_url: str, args: object) -> Run:
    callbacks = harness.account_callbacks(1000)
    load = await harness.run_load(
        bare_url,
        callbacks,
        args.connections,  # type: ignore[attr-defined]
        args.duration,  # type: ignore[attr-defined]
    )
    return Run(load, 0.0, "-")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["external", "inprocess"])
    parser.add_argument("--kinds", nargs="+", default=["account", "per-job"])
    args = parser.parse_args()
    tool = "wrk -t1" if harness.wrk_available() else "built-in aiohttp generator"
    print(f"## ingest: {tool} -c{args.connections} -d{args.duration:g}s, {harness.machine()}")
    if not harness.wrk_available():
        # measured on 2 cores: bare starlette 5,750-8,150 rps from this generator against
        # 12,900-15,500 from wrk in the same session, while the relay's rps barely moves
        print(
            "  ! wrk is not installed (`make bench` installs it): the built-in generator"
            " takes a core itself and caps the bare baseline, so the ratios read high"
        )
    targets = [(m, k) for m in args.modes for k in args.kinds]
    rows = []
    with harness.workdir() as tmp:
        work = Path(tmp)
        async with (
            harness.served("sink", work) as (_sink, sink_url),
            harness.served("bare", work) as (_bare, bare_url),
        ):
            config = harness.write_config(work, sink_url)
            for backend in harness.backends():
                runs: dict[tuple[str, str], list[Run]] = {t: [] for t in targets}
                bare: list[Run] = []
                for _ in range(args.rounds):
                    bare.append(await bare_run(bare_url, args))
                    print(f"  bare: {bare[-1].load.rps:.0f} rps", flush=True)
                    for mode, kind in targets:
                        run = await relay_run(backend, mode, kind, work, config, sink_url, args)
                        runs[(mode, kind)].append(run)
                        print(
                            f"  {backend} {mode} {kind}: {run.load.rps:.0f} rps, p99 "
                            f"{run.load.p99_ms:.1f} ms, {run.cpu_ms:.2f} ms CPU each, {run.check}",
                            flush=True,
                        )
                bare_rps = statistics.median(r.load.rps for r in bare)
                rows.append(_row(f"bare starlette ({backend} round)", bare, bare_rps))
                for (mode, kind), done in runs.items():
                    rows.append(_row(f"relay {mode}, {kind} ({backend})", done, bare_rps))
    print()
    print_table(
        [
            "target",
            "rps (each round)",
            "p50 ms",
            "p99 ms",
            "x bare",
            "CPU ms/callback",
            "peak RSS MB",
            "check",
        ],
        rows,
    )
    print("targets: external ≥ 0.40 x bare with p99 ≤ 30 ms; inprocess ≥ 0.25 x bare")


def _row(name: str, runs: list[Run], bare_rps: float) -> list[object]:
    rps = statistics.median(r.load.rps for r in runs)
    return [
        name,
        " / ".join(f"{r.load.rps:.0f}" for r in runs),
        f"{statistics.median(r.load.p50_ms for r in runs):.1f}",
        f"{statistics.median(r.load.p99_ms for r in runs):.1f}",
        f"{rps / bare_rps:.2f}",
        f"{statistics.median(r.cpu_ms for r in runs):.2f}" if runs[0].cpu_ms else "-",
        f"{max(r.rss_mb for r in runs):.0f}" if runs[0].rss_mb else "-",
        "; ".join(sorted({r.check.split(" (")[0] for r in runs})),
    ]


if __name__ == "__main__":
    asyncio.run(main())
