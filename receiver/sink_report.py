"""Each sink's health as every process sees it (``GET /v1/sinks``, ``relay sinks``) and
``relay sink test NAME`` (one signed ``relay.test`` event through the real sink)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from handlers.sinks.base import SinkConfig, answer_of
from handlers.sinks.client import HttpClient
from receiver.attempts import destination_host, known_secrets, response_excerpt
from receiver.errors import DeliveryFailed
from receiver.events import Event, EventData, EventType, isoformat, new_id, utcnow
from receiver.store import Store


async def sink_views(sinks: Mapping[str, SinkConfig], store: Store) -> list[dict[str, Any]]:
    """One view per configured sink: its shared circuit state, backlog and dead
    letters, read from the store (true whichever process delivers)."""
    health = await store.sink_health()
    stats = await store.delivery_stats()
    views = []
    for name, config in sinks.items():
        row = health.get(name)
        counts = stats.get(name)
        views.append(
            {
                "name": name,
                "type": config.type,
                "state": row.state.value if row else "ok",
                "backlog": counts.pending if counts else 0,
                "dead": counts.dead if counts else 0,
                "oldest_pending_at": isoformat(counts.oldest_pending_at) if counts else None,
                "last_error": row.last_error if row else None,
                "failures": row.failures if row else 0,
                "opened_at": isoformat(row.opened_at) if row else None,
                "circuit_opened": row.opened_count if row else 0,
                "circuit_closed": row.closed_count if row else 0,
            }
        )
    return views


def relay_test_event() -> Event:
    """A ``relay.test`` event shaped like every other (a fresh id each time, so no
    receiver discards it as a duplicate)."""
    now = utcnow()
    data: EventData = {
        "job_id": None,
        "provider": "relay",
        "provider_task_id": "relay-test",
        "parent_id": None,
        "action": None,
        "ref": "relay-sink-test",
        "status": "test",
        "progress": None,
        "image_url": None,
        "image_urls": [],
        "buttons": [],
        "error": None,
        "submitted_at": isoformat(now),
        "finished_at": isoformat(now),
    }
    return Event(id=new_id("evt_test"), type=EventType.TEST, timestamp=now, data=data)


async def send_test_event(config: SinkConfig, client: HttpClient, out: TextIO = sys.stdout) -> int:
    """Deliver one ``relay.test`` event through the sink ``config`` describes and print
    what the destination answered; 0 when it accepted the event, 1 otherwise."""
    from handlers.sinks import SINKS

    sink = SINKS[config.type](config, client)
    event = relay_test_event()
    host = destination_host(config.options, getattr(sink, "destination_host", None))
    secrets = known_secrets(config.options)
    where = f"sink {config.name!r} ({config.type}{f' → {host}' if host else ''})"
    started = time.perf_counter()
    try:
        answer = answer_of(await sink.deliver(event))
    except DeliveryFailed as exc:
        took = (time.perf_counter() - started) * 1000
        print(f"{where}: FAILED after {took:.0f} ms: {exc.message}", file=out)
        _print_answer(exc.status, response_excerpt(exc.response_body, secrets), out)
        return 1
    finally:
        await sink.aclose()
    took = (time.perf_counter() - started) * 1000
    print(f"{where}: delivered {event.type.value} {event.id} in {took:.0f} ms", file=out)
    _print_answer(answer.status, response_excerpt(answer.body, secrets), out)
    return 0


def _print_answer(status: int | None, excerpt: str | None, out: TextIO) -> None:
    if status is not None:
        print(f"  answered HTTP {status}", file=out)
    if excerpt:
        for line in excerpt.splitlines()[:20]:
            print(f"  | {line}", file=out)
