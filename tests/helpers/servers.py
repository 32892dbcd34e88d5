"""Run ASGI apps on real loopback sockets inside a test's event loop."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a relay *process*, which
    binds it itself; in-process servers hold theirs with ``reserve_socket``). It lies
    below the ephemeral range: a port the kernel handed out (``bind`` to 0) could go to
    any outgoing connection on the box before the process, seconds later, binds it."""
    for _ in range(50):
        port = random.randrange(20000, max(_ephemeral_start(), 20001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        fallback: int = sock.getsockname()[1]
        return fallback


def reserve_socket(port: int = 0) -> socket.socket:
    """A TCP socket bound to 127.0.0.1:``port`` (0: any free one) and held, so no other
    test (or xdist worker) can take the port before ``serve_app`` listens on it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def socket_port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def serve_app(
    app: Any, port: int | None = None, *, sock: socket.socket | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan included) on 127.0.0.1 — on ``sock`` when given, else on
    ``port``, else on a free port; yields its base URL."""
    sock = sock or reserve_socket(port or 0)
    port = socket_port(sock)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="auto")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited before it started")
        await asyncio.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=15)
        finally:
            sock.close()
