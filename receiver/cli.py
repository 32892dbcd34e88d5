"""The ``relay`` command (also ``python -m receiver``).

Every verb reads the environment and ``RELAY_CONFIG`` like the service does; a bad
configuration prints every problem and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from receiver.errors import ConfigError, RelayError
from receiver.events import DeliveryState, JobStatus, utcnow
from receiver.settings import Settings, load_settings, unused_sinks

Command = Callable[[argparse.Namespace], int]
SHUTDOWN_GRACE_S = 10.0


def _settings() -> Settings:
    """Settings from the environment, with logging set up (to stderr, so a verb's
    stdout stays machine-readable)."""
    from receiver.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver.app import create_app
    from receiver.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    port = args.port if args.port is not None else settings.port
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from receiver.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    return asyncio.run(_worker(settings, once=args.once, budget_s=args.budget))


async def _worker(settings: Settings, *, once: bool, budget_s: float) -> int:
    from receiver.once import work_once
    from receiver.runtime import Runtime

    if once:
        print(json.dumps({"attempted": await work_once(settings, budget_s)}))
        return 0
    async with Runtime.open(settings) as runtime:
        worker = runtime.worker(grace_s=SHUTDOWN_GRACE_S)
        tasks = [asyncio.create_task(worker.run()), asyncio.create_task(runtime.poller.run())]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # a deploy's SIGTERM: finish in-flight deliveries instead of abandoning them
            # to their leases (which would delay them and send some twice)
            loop.add_signal_handler(signum, lambda: [task.cancel() for task in tasks])
        await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import uvicorn

    from simulators import create_simulator_app

    print(f"simulators on http://{args.host}:{args.port}/{{provider}}", file=sys.stderr)
    uvicorn.run(create_simulator_app(), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from receiver.demo import run_demo

    return asyncio.run(run_demo(port=args.port, workdir=args.dir))


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings()
    for warning in settings.warnings:
        print(f"warning: {warning}")
    for sink in unused_sinks(settings):
        print(f"warning: sink {sink!r} is not used by any route")
    print(
        f"config ok: {len(settings.providers)} provider(s) "
        f"({', '.join(sorted(settings.providers)) or 'none'}), "
        f"{len(settings.sinks)} sink(s), {len(settings.routes)} route(s), "
        f"store {settings.database_url.split(':', 1)[0]}, delivery {settings.delivery_mode.value}"
    )
    return 0


def _store_command(run: Callable[[Any], Awaitable[int]]) -> Command:
    def command(args: argparse.Namespace) -> int:
        from receiver.store import open_store

        settings = _settings()

        async def main() -> int:
            store = open_store(settings.database_url)
            try:
                await store.migrate()
                return await run((store, args))
            finally:
                await store.close()

        return asyncio.run(main())

    return command


async def _migrate(ctx: Any) -> int:
    store, _args = ctx
    print(json.dumps({"schema_version": await store.migrate()}))
    return 0


async def _jobs(ctx: Any) -> int:
    store, args = ctx
    jobs = await store.list_jobs(
        ref=args.ref,
        status=JobStatus(args.status) if args.status else None,
        provider=args.provider,
        limit=args.limit,
    )
    for job in jobs:
        print(json.dumps(job.view(), sort_keys=True))
    return 0


async def _deliveries(ctx: Any) -> int:
    from receiver.store import DeliveryFilter

    store, args = ctx
    where = DeliveryFilter(
        state=DeliveryState(args.state) if args.state else None, sink=args.sink, job_id=args.job
    )
    for delivery in await store.list_deliveries(where, limit=args.limit):
        print(json.dumps(delivery.view(), sort_keys=True))
    return 0


async def _replay(ctx: Any) -> int:
    from receiver.store import DeliveryFilter

    store, args = ctx
    where = DeliveryFilter(
        delivery_id=args.id,
        state=None if args.id else DeliveryState(args.state),
        sink=args.sink,
        job_id=args.job,
    )
    if args.id and await store.get_delivery(args.id) is None:
        print(f"relay: no delivery {args.id!r}", file=sys.stderr)
        return 1
    count = await store.replay(where, utcnow())
    print(json.dumps({"replayed": count}))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings()

    async def main() -> int:
        from receiver.runtime import Runtime

        async with Runtime.open(settings) as runtime:
            body: dict[str, Any] = {
                "provider": args.provider,
                "parent_id": args.parent,
                "action": args.action,
            }
            if args.ref:
                body["ref"] = args.ref
            if args.sink:
                body["sinks"] = args.sink
            submitter = runtime.submitter
            job, _created = await submitter.submit(submitter.parse(body), args.idempotency_key)
            _print_json(job.view())
        return 0

    return asyncio.run(main())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=None, help="default $PORT, else 8000")
    serve.set_defaults(run=cmd_serve)

    worker = verbs.add_parser("worker", help="deliver events and poll providers")
    worker.add_argument("--once", action="store_true", help="work off what is due, then exit")
    worker.add_argument("--budget", type=float, default=50.0, help="seconds, with --once")
    worker.set_defaults(run=cmd_worker)

    simulate = verbs.add_parser("simulate", help="serve the provider simulators")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8001)
    simulate.set_defaults(run=cmd_simulate)

    demo = verbs.add_parser("demo", help="SQLite + simulators + a demo upscale, then keep serving")
    demo.add_argument("--port", type=int, default=None)
    demo.add_argument("--dir", default=".relay-demo")
    demo.set_defaults(run=cmd_demo)

    submit = verbs.add_parser("submit", help="submit an upscale")
    submit.add_argument("--provider", required=True)
    submit.add_argument("--parent", required=True, help="the parent task/message id")
    submit.add_argument("--action", required=True, help="U1..U4, upscale_2x, 'Upscale (2x)' …")
    submit.add_argument("--ref")
    submit.add_argument("--sink", action="append", help="override the routes (repeatable)")
    submit.add_argument("--idempotency-key")
    submit.set_defaults(run=cmd_submit)

    jobs = verbs.add_parser("jobs", help="list jobs")
    jobs.add_argument("--ref")
    jobs.add_argument("--status", choices=[s.value for s in JobStatus])
    jobs.add_argument("--provider")
    jobs.add_argument("--limit", type=int, default=100)
    jobs.set_defaults(run=_store_command(_jobs))

    deliveries = verbs.add_parser("deliveries", help="list deliveries")
    deliveries.add_argument("--state", choices=[s.value for s in DeliveryState])
    deliveries.add_argument("--sink")
    deliveries.add_argument("--job")
    deliveries.add_argument("--limit", type=int, default=100)
    deliveries.set_defaults(run=_store_command(_deliveries))

    replay = verbs.add_parser("replay", help="re-deliver dead (or chosen) deliveries")
    replay.add_argument("--id", help="one delivery id")
    replay.add_argument("--state", default="dead", choices=["dead", "delivered"])
    replay.add_argument("--sink")
    replay.add_argument("--job")
    replay.set_defaults(run=_store_command(_replay))

    check = verbs.add_parser("check-config", help="validate the configuration")
    check.set_defaults(run=cmd_check_config)

    migrate = verbs.add_parser("migrate", help="apply store migrations")
    migrate.set_defaults(run=_store_command(_migrate))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"relay: {exc.message}", file=sys.stderr)
        return 2
    except RelayError as exc:
        print(f"relay: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())
