"""The benchmarks' own servers, each run under uvicorn with the settings ``relay serve`` uses.

    python bench/servers.py sink PORT          a local sink: records each POST's webhook-id
    python bench/servers.py bare PORT          a bare starlette callback endpoint (answers 200)
    python bench/servers.py bare PORT SINKURL  … that also forwards each callback to SINKURL

The sink keeps, per ``webhook-id``, the ``time.monotonic()`` of its first arrival (one clock
for every process on the machine), served by ``GET /stats`` and ``GET /arrivals``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def sink_app() -> Starlette:
    arrivals: dict[str, float] = {}
    counts = {"posts": 0}

    async def hook(request: Request) -> Response:
        await request.body()
        now = time.monotonic()
        counts["posts"] += 1
        arrivals.setdefault(request.headers.get("webhook-id", ""), now)
        return Response("ok")

    async def stats(request: Request) -> Response:
        times = arrivals.values()
        return JSONResponse(
            {
                "posts": counts["posts"],
                "distinct": len(arrivals),
                "first": min(times, default=0.0),
                "last": max(times, default=0.0),
            }
        )

    async def dump(request: Request) -> Response:
        return JSONResponse(arrivals)

    async def reset(request: Request) -> Response:
        arrivals.clear()
        counts["posts"] = 0
        return Response("ok")

    return Starlette(
        routes=[
            Route("/stats", stats),
            Route("/arrivals", dump),
            Route("/reset", reset, methods=["POST"]),
            Route("/{path:path}", hook, methods=["POST"]),
        ]
    )


def bare_app(forward_url: str | None) -> Starlette:
    """What any starlette service can do per callback: read it, parse it, answer. With
    ``forward_url``, also POST it on (fire and forget, aiohttp): the stack's own latency."""
    state: dict[str, Any] = {}
    pending: set[asyncio.Task[None]] = set()

    import aiohttp  # imported up front: the first callback must not pay for it

    async def forward(key: str, body: bytes) -> None:
        session = state.get("session")
        if session is None:
            session = state["session"] = aiohttp.ClientSession()
        headers = {"content-type": "application/json", "webhook-id": key}
        async with session.post(forward_url, data=body, headers=headers) as response:
            await response.read()

    async def callback(request: Request) -> Response:
        body = await request.body()
        key = str(json.loads(body).get("task_id", ""))
        if forward_url:
            task = asyncio.create_task(forward(key, body))
            pending.add(task)
            task.add_done_callback(pending.discard)
        return JSONResponse({"ok": True, "event_id": key, "duplicate": False})

    return Starlette(
        routes=[
            Route("/callbacks/{provider}/{token}", callback, methods=["POST"]),
            Route("/callbacks/{provider}", callback, methods=["POST"]),
            Route("/readyz", lambda request: Response("ok")),
        ]
    )


def main(argv: list[str]) -> None:
    import uvicorn

    kind, port = argv[0], int(argv[1])
    app = sink_app() if kind == "sink" else bare_app(argv[2] if len(argv) > 2 else None)
    # the same settings as `relay serve` (receiver/cli.py)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
