"""CPU per callback of the app itself: the ASGI app called directly, no HTTP, no sockets.

    .venv/bin/python bench/app_cpu.py [--callbacks 20000] [--concurrency 64] [--rounds 2]
                                      [--kinds account per-job] [--profile 30]

``bench/ingest.py`` measures the whole stack under wrk; on a shared 2-core machine its
rates move with whatever else runs. This driver takes uvicorn, the load generator and the
kernel out: it builds the relay's app (external delivery mode, SQLite in a temporary
directory, the default log level) and calls it with ``concurrency`` coroutines sending
valid callbacks, each for a task of its own, and reads ``time.process_time()`` over them.
The baseline, alternating with it, is ``bench/servers.py``'s bare starlette endpoint driven
the same way. ``--profile N`` prints cProfile's top N functions of the last relay round.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
from harness import Callback, print_table
from servers import bare_app

WARM_UP = 200


def _scope(callback: Callback, state: dict[str, Any]) -> dict[str, Any]:
    path = callback.path.encode()
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": callback.path,
        "raw_path": path,
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "state": dict(state),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"x-webhook-secret", callback.secret.encode()),
            (b"content-length", str(len(callback.body)).encode()),
        ],
    }


async def drive(
    app: Any, callbacks: Sequence[Callback], concurrency: int, profile: cProfile.Profile | None
) -> tuple[float, Counter[int]]:
    """µs of CPU per callback past the warm-up, and the answers' statuses."""
    statuses: Counter[int] = Counter()
    state: dict[str, Any] = {}

    async def call(callback: Callback) -> None:
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": callback.body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        await app(_scope(callback, state), receive, send)

    async with app.router.lifespan_context(app) as lifespan_state:
        state.update(lifespan_state or {})
        for callback in callbacks[:WARM_UP]:
            await call(callback)
        pending = iter(callbacks[WARM_UP:])

        async def loop() -> None:
            for callback in pending:  # the coroutines share one iterator
                await call(callback)

        started = time.process_time()
        if profile is not None:
            profile.enable()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        if profile is not None:
            profile.disable()
        spent = time.process_time() - started
    return 1e6 * spent / max(len(callbacks) - WARM_UP, 1), statuses


async def relay_round(
    kind: str, count: int, concurrency: int, profile: cProfile.Profile | None
) -> tuple[float, Counter[int]]:
    from receiver.app import create_app
    from receiver.cli import bootstrap

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        database_url = f"sqlite:///{work / 'relay.db'}"
        config = harness.write_config(work, "http://127.0.0.1:9")  # nothing is delivered
        if kind == "per-job":
            callbacks = await harness.seed_jobs(database_url, count)
        else:
            callbacks = harness.account_callbacks(count)
        saved = dict(os.environ)
        os.environ.update(harness.relay_env(database_url, config, "external", 8000))
        try:
            app = create_app(bootstrap(host="127.0.0.1", port=8000))
            return await drive(app, callbacks, concurrency, profile)
        finally:
            os.environ.clear()
            os.environ.update(saved)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--callbacks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", default=["account", "per-job"])
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    print(
        f"## app CPU: {args.callbacks} callbacks, {args.concurrency} at once, {harness.machine()}"
    )
    relay: dict[str, list[float]] = {kind: [] for kind in args.kinds}
    bare: list[float] = []
    profile = cProfile.Profile() if args.profile else None
    for round_ in range(args.rounds):
        last = round_ == args.rounds - 1
        for kind in args.kinds:
            spent, statuses = await relay_round(
                kind, args.callbacks, args.concurrency, profile if last else None
            )
            if set(statuses) != {200}:
                raise SystemExit(f"relay {kind}: answers {dict(statuses)}")
            relay[kind].append(spent)
        spent, _ = await drive(
            bare_app(None), harness.account_callbacks(args.callbacks), args.concurrency, None
        )
        bare.append(spent)
        shown = ", ".join(f"{kind} {values[-1]:.0f}" for kind, values in relay.items())
        print(f"  round {round_ + 1}: relay {shown}, bare {bare[-1]:.0f} µs", flush=True)
    bare_us = statistics.median(bare)
    rows: list[list[object]] = [["bare starlette endpoint", f"{bare_us:.0f}", "1.0"]]
    for kind, values in relay.items():
        median = statistics.median(values)
        rows.append([f"relay, {kind} (external mode)", f"{median:.0f}", f"{median / bare_us:.1f}"])
    print()
    print_table(["app", "µs CPU per callback (median)", "x bare"], rows)
    if profile is not None:
        print()
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    # the relay logs at its default level, as in production, into a stream nobody reads
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's lifetime)
    asyncio.run(main())
