"""The verbs that watch the relay: ``relay tail``, ``relay sinks``, ``relay sink test``
(and the ``--wait`` of ``relay submit``, in ``receiver.tail``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

from receiver.errors import ConfigError
from receiver.feed import FeedFilter
from receiver.settings import Settings

Loader = Callable[[], Settings]


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    env = os.environ
    return (
        env.get("RELAY_URL")
        or env.get("RELAY_PUBLIC_URL")
        or (f"http://127.0.0.1:{env.get('PORT', '8000')}")
    )


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow ``GET /v1/stream``: one line per event and per delivery attempt."""
    import httpx

    from receiver.tail import tail

    token = args.token or os.environ.get("RELAY_API_TOKEN")
    if not token:
        raise ConfigError(["RELAY_API_TOKEN is not set (relay tail reads the API's stream)"])
    where = FeedFilter(
        job_id=args.job,
        ref=args.ref,
        provider=args.provider,
        sink=args.sink,
        types=tuple(t for raw in args.type or () for t in raw.split(",") if t),
    )
    base_url = _base_url(args)
    print(f"relay tail: following {base_url}/v1/stream (Ctrl-C stops)", file=sys.stderr)
    try:
        asyncio.run(tail(base_url, token, where))
    except httpx.HTTPStatusError as exc:
        print(
            f"relay: the stream answered HTTP {exc.response.status_code}: "
            f"{exc.response.text[:200]}",
            file=sys.stderr,
        )
        return 1
    return 0


SINK_COLUMNS = ("name", "type", "state", "backlog", "dead", "last_error")


def sinks_command(load: Loader) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from receiver.cli_output import print_rows, wants_json
        from receiver.sink_report import sink_views
        from receiver.store import open_store
        from receiver.store_check import probe_store, require_sqlite_file, store_failure

        settings = load()
        url = settings.database_url
        require_sqlite_file(url)  # like jobs / deliveries: never create a store

        async def main() -> list[dict[str, Any]]:
            await probe_store(url)
            store = open_store(url)
            try:
                try:
                    await store.migrate()
                except Exception as exc:
                    raise store_failure(exc, url) from None
                return await sink_views(settings.sinks, store)
            finally:
                await store.close()

        views = asyncio.run(main())
        print_rows(views, SINK_COLUMNS, as_json=wants_json(args.json), empty="no sinks configured")
        return 0

    return command


def sink_test_command(load: Loader) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from handlers.sinks.client import AiohttpClient
        from receiver.sink_report import send_test_event

        settings = load()
        config = settings.sinks.get(args.name)
        if config is None:
            known = ", ".join(sorted(settings.sinks)) or "none"
            print(
                f"relay: no sink {args.name!r} is configured (configured: {known})", file=sys.stderr
            )
            return 1

        async def main() -> int:
            async with AiohttpClient() as client:  # the sinks' own client, as in the worker
                return await send_test_event(config, client)

        return asyncio.run(main())

    return command


def register(verbs: Any, load: Loader) -> None:
    """Add ``tail``, ``sinks`` and ``sink test`` to the ``relay`` parser's verbs."""
    tail = verbs.add_parser("tail", help="follow events and delivery attempts live")
    tail.add_argument("--job", help="only this job")
    tail.add_argument("--ref", help="only jobs with this ref")
    tail.add_argument("--provider")
    tail.add_argument("--sink")
    tail.add_argument("--type", action="append", help="event types, globs allowed (delivery.*)")
    tail.add_argument("--url", help="the relay's base URL (default $RELAY_URL, $RELAY_PUBLIC_URL)")
    tail.add_argument("--token", help="API token (default $RELAY_API_TOKEN)")
    tail.set_defaults(run=cmd_tail)

    sinks = verbs.add_parser("sinks", help="each sink's health, backlog and dead letters")
    sinks.add_argument(
        "--json", action="store_true", help="JSON lines (the default when stdout is not a terminal)"
    )
    sinks.set_defaults(run=sinks_command(load))

    sink = verbs.add_parser("sink", help="act on one sink")
    actions = sink.add_subparsers(dest="sink_action", required=True)
    test = actions.add_parser("test", help="send one signed relay.test event, print the answer")
    test.add_argument("name")
    test.set_defaults(run=sink_test_command(load))


def add_wait_arguments(submit: argparse.ArgumentParser) -> None:
    """``relay submit --wait [--timeout S]``."""
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the job live; exit 0 once every routed delivery is delivered",
    )
    submit.add_argument("--timeout", type=float, default=900.0, help="seconds, with --wait")
