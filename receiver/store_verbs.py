"""The ``relay`` verbs that need only the store (``DATABASE_URL``): ``jobs``,
``deliveries``, ``replay`` and ``migrate`` (``tail`` belongs here too). They read no
secrets and no ``relay.toml``; a read-only verb never creates a store."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from receiver.bootstrap import bootstrap_store
from receiver.cli_output import print_result, print_rows, wants_json
from receiver.events import DeliveryState, JobStatus, utcnow
from receiver.store_check import probe_store, require_sqlite_file, store_failure

Command = Callable[[argparse.Namespace], int]


def store_command(run: Callable[[Any], Awaitable[int]], *, creates: bool = False) -> Command:
    """A verb that needs only the store (``DATABASE_URL``). Unless it ``creates`` the
    store (``migrate``), a SQLite file that does not exist is an error, not a new file."""

    def command(args: argparse.Namespace) -> int:
        from receiver.store import open_store

        settings = bootstrap_store()
        url = settings.database_url
        if not creates:
            require_sqlite_file(url)

        async def main() -> int:
            await probe_store(url)
            store = open_store(url)
            try:
                try:
                    await store.migrate()
                except Exception as exc:
                    raise store_failure(exc, url) from None
                return await run((store, args))
            finally:
                await store.close()

        return asyncio.run(main())

    return command


async def migrate(ctx: Any) -> int:
    store, args = ctx
    version = await store.migrate()
    print_result(
        {"schema_version": version},
        f"store migrated: schema version {version}",
        as_json=wants_json(args.json),
    )
    return 0


JOB_COLUMNS = ("job_id", "provider", "action", "status", "ref", "submitted_at", "finished_at")
DELIVERY_COLUMNS = ("id", "sink", "state", "attempts", "job_id", "next_attempt_at", "last_error")


async def jobs(ctx: Any) -> int:
    store, args = ctx
    jobs = await store.list_jobs(
        ref=args.ref,
        status=JobStatus(args.status) if args.status else None,
        provider=args.provider,
        limit=args.limit,
    )
    print_rows(
        [job.view() for job in jobs],
        JOB_COLUMNS,
        as_json=wants_json(args.json),
        empty="no jobs" + (" match" if args.ref or args.status or args.provider else " yet"),
    )
    return 0


async def deliveries(ctx: Any) -> int:
    from receiver.store import DeliveryFilter

    store, args = ctx
    where = DeliveryFilter(
        state=DeliveryState(args.state) if args.state else None, sink=args.sink, job_id=args.job
    )
    deliveries = await store.list_deliveries(where, limit=args.limit)
    print_rows(
        [delivery.view() for delivery in deliveries],
        DELIVERY_COLUMNS,
        as_json=wants_json(args.json),
        empty="no deliveries" + (" match" if args.state or args.sink or args.job else " yet"),
    )
    return 0


async def replay(ctx: Any) -> int:
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
    text = f"replayed {count} deliver{'y' if count == 1 else 'ies'}"
    if count == 0:
        text = f"nothing to replay (no {args.state} deliveries match)"
    print_result({"replayed": count}, text, as_json=wants_json(args.json))
    return 0
