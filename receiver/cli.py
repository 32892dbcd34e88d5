"""The ``relay`` command (also ``python -m receiver``).

Every verb reads only what it uses: ``serve``, ``worker``, ``submit`` and
``check-config`` read the environment and ``RELAY_CONFIG`` like the service does;
``jobs``, ``deliveries``, ``replay`` and ``migrate`` need only ``DATABASE_URL``.
Mistakes a user can fix print one line (a bad configuration: every problem, one per
line) and exit with a status, never a traceback: 2 for the configuration, 1 for the
rest (port in use, store unreachable, permissions).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

from receiver import store_verbs
from receiver.bootstrap import (
    announce_generated,
    bind_socket,
    bootstrap,
    error_line,
)
from receiver.cli_observe import add_wait_arguments
from receiver.cli_observe import register as register_observe_verbs
from receiver.errors import ConfigError
from receiver.events import DeliveryState, JobStatus
from receiver.settings import SECRET_KEY, DeliveryMode, Settings, unused_sinks
from receiver.store_check import probe_store
from receiver.store_verbs import store_command

SHUTDOWN_GRACE_S = 10.0
EXIT_STARTUP_FAILED = 3


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def listening_line(settings: Settings) -> str:
    """``relay serve``'s one line: where it listens, where callbacks point, the store
    and the delivery mode."""
    from receiver.store_check import describe_url

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    listen = f"http://{host}:{settings.port}"
    if settings.host in ("0.0.0.0", "::", ""):
        listen += " (all interfaces)"
    return (
        f"relay: listening on {listen}; callbacks to {settings.public_url}/callbacks/…; "
        f"store {describe_url(settings.database_url)}; delivery {settings.delivery_mode.value}"
    )


def _serve_problems(settings: Settings) -> list[str]:
    if settings.delivery_mode is DeliveryMode.INLINE and settings.database_url.startswith("sqlite"):
        return ["RELAY_DELIVERY_MODE=inline needs a networked store (PostgreSQL)"]
    return []


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver.app import create_app

    settings = bootstrap(host=args.host, port=args.port)
    problems = _serve_problems(settings)
    if problems:
        raise ConfigError(problems)
    asyncio.run(probe_store(settings.database_url))
    sock = bind_socket(settings.host, settings.port)
    announce_generated(settings)
    print(listening_line(settings), flush=True)
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else EXIT_STARTUP_FAILED


def cmd_worker(args: argparse.Namespace) -> int:
    settings = bootstrap(needs={SECRET_KEY})
    asyncio.run(probe_store(settings.database_url))
    announce_generated(settings)
    return asyncio.run(_worker(settings, once=args.once, budget_s=args.budget))


async def _worker(settings: Settings, *, once: bool, budget_s: float) -> int:
    from receiver.gc_tuning import tuned_gc
    from receiver.once import work_once
    from receiver.retention import run_retention
    from receiver.runtime import Runtime

    if once:
        print(json.dumps({"attempted": await work_once(settings, budget_s)}))
        return 0
    async with Runtime.open(settings) as runtime:
        worker = runtime.worker(grace_s=SHUTDOWN_GRACE_S)
        tasks = [
            asyncio.create_task(worker.run()),
            asyncio.create_task(runtime.poller.run()),
            asyncio.create_task(run_retention(runtime.store, settings.retention_days)),
        ]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # a deploy's SIGTERM: finish in-flight deliveries instead of abandoning them
            # to their leases (which would delay them and send some twice)
            loop.add_signal_handler(signum, lambda: [task.cancel() for task in tasks])
        with tuned_gc():
            await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver.logs import configure_logging
    from simulators import create_simulator_app, default_keys

    configure_logging("auto", "warning")
    sock = bind_socket(args.host, args.port)
    print(simulator_banner(args.host, args.port, default_keys()), flush=True)
    config = uvicorn.Config(create_simulator_app(), log_config=None, access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def simulator_banner(host: str, port: int, keys: dict[str, str]) -> str:
    """What ``relay simulate`` prints: each provider's base URL and the key it accepts,
    and the ``relay.toml`` tables that point the relay at them."""
    root = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
    width = max(map(len, keys))
    lines = [f"relay simulate: provider simulators on {root} (any other API key is refused)"]
    lines += [
        f"  {name:<{width}}  {root}/{name:<{width}}  api_key {key}" for name, key in keys.items()
    ]
    lines.append("relay.toml for them:")
    for name, key in keys.items():
        lines.append(f'  [providers.{name}]\n  api_key = "{key}"\n  base_url = "{root}/{name}"')
    lines.append("knobs ride in the parent id you submit (grid-fail, p-nocallback …): see README")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from receiver.demo import run_demo

    return asyncio.run(run_demo(port=args.port, workdir=args.dir))


def cmd_gen_secret(args: argparse.Namespace) -> int:
    """A fresh Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes), good
    for an http sink's ``secret``, ``RELAY_SECRET_KEY`` or ``RELAY_API_TOKEN``."""
    print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = bootstrap()
    for warning in settings.warnings:
        print(f"warning: {warning}")
    for sink in unused_sinks(settings):
        print(f"warning: sink {sink!r} is not used by any route")
    for problem in _serve_problems(settings):
        print(f"warning: {problem} (relay serve refuses this)")
    print(
        f"config ok: {len(settings.providers)} provider(s) "
        f"({', '.join(sorted(settings.providers)) or 'none'}), "
        f"{len(settings.sinks)} sink(s), {len(settings.routes)} route(s), "
        f"store {settings.database_url.split(':', 1)[0]}, delivery {settings.delivery_mode.value}"
        + (f", file {settings.config_path}" if settings.config_path else ", no config file"),
        flush=True,
    )
    if args.offline:
        print("store not checked (--offline)")
    else:
        print(f"store ok: {asyncio.run(probe_store(settings.database_url))}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    settings = bootstrap(needs={SECRET_KEY})

    async def main() -> int:
        from receiver.runtime import Runtime

        await probe_store(settings.database_url)
        async with Runtime.open(settings) as runtime:
            after = await runtime.store.feed_head() if args.wait else None
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
            if args.wait:
                from receiver.tail import wait_for_job

                return await wait_for_job(runtime.store, job.id, after, timeout_s=args.timeout)
        return 0

    return asyncio.run(main())


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="JSON lines (the default when stdout is not a terminal)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=None, help="default 0.0.0.0 (all interfaces)")
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="default $PORT, else 8000 (also in the default RELAY_PUBLIC_URL)",
    )
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
    add_wait_arguments(submit)
    submit.set_defaults(run=cmd_submit)

    jobs = verbs.add_parser("jobs", help="list jobs (needs only DATABASE_URL)")
    jobs.add_argument("--ref")
    jobs.add_argument("--status", choices=[s.value for s in JobStatus])
    jobs.add_argument("--provider")
    jobs.add_argument("--limit", type=int, default=100)
    _json_flag(jobs)
    jobs.set_defaults(run=store_command(store_verbs.jobs))

    deliveries = verbs.add_parser("deliveries", help="list deliveries (needs only DATABASE_URL)")
    deliveries.add_argument("--state", choices=[s.value for s in DeliveryState])
    deliveries.add_argument("--sink")
    deliveries.add_argument("--job")
    deliveries.add_argument("--limit", type=int, default=100)
    _json_flag(deliveries)
    deliveries.set_defaults(run=store_command(store_verbs.deliveries))

    replay = verbs.add_parser("replay", help="re-deliver dead (or chosen) deliveries")
    replay.add_argument("--id", help="one delivery id")
    replay.add_argument("--state", default="dead", choices=["dead", "delivered"])
    replay.add_argument("--sink")
    replay.add_argument("--job")
    _json_flag(replay)
    replay.set_defaults(run=store_command(store_verbs.replay))

    check = verbs.add_parser("check-config", help="validate the configuration and reach the store")
    check.add_argument("--offline", action="store_true", help="do not open the store")
    check.set_defaults(run=cmd_check_config)

    migrate = verbs.add_parser(
        "migrate", help="create or upgrade the store (needs only DATABASE_URL)"
    )
    _json_flag(migrate)
    migrate.set_defaults(run=store_command(store_verbs.migrate, creates=True))

    gen_secret = verbs.add_parser("gen-secret", help="print a fresh whsec_… secret")
    gen_secret.set_defaults(run=cmd_gen_secret)
    # sinks and sink test read relay.toml's sinks (and the store) but no secret
    register_observe_verbs(verbs, lambda: bootstrap(needs=()))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        found = error_line(exc)
        if found is None:
            raise
        print(f"relay: {found[0]}", file=sys.stderr)
        return found[1]
    return code


if __name__ == "__main__":  # pragma: no cover
    os._exit(main())
