"""The message brokers this machine (and CI) runs on 127.0.0.1, for the broker sinks'
tests: RabbitMQ (5672, guest/guest), NATS with JetStream (4222) and Redis (6379).

A broker that is not listening skips its tests locally, loudly, and fails them under
``CI=true``, as the PostgreSQL tests do. Names made here carry a random suffix:
other test runs share these servers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Mapping

import pytest

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"
_PORTS = {"RabbitMQ": 5672, "NATS": 4222, "Redis": 6379}


def require_broker(name: str, environ: Mapping[str, str] | None = None) -> None:
    """Return if broker ``name`` listens on 127.0.0.1; else skip (locally) or fail (CI)."""
    env = os.environ if environ is None else environ
    port = _PORTS[name]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        reason = f"{name} tests NOT RUN: nothing listens on 127.0.0.1:{port} ({exc})"
        if env.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true the {name} sink must be tested")
        pytest.skip(reason)


def unique(prefix: str) -> str:
    """``prefix`` plus a random suffix (streams, queues, exchanges, subjects …)."""
    return f"{prefix}-{secrets.token_hex(5)}"


def rabbitmq_close_connections(connection_name: str) -> int:
    """Close, from the server side (``rabbitmqctl close_connection``), every RabbitMQ
    connection whose client named itself ``connection_name``; how many it closed.
    Only those: other test runs share the broker."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        reason = "rabbitmqctl is not installed: cannot drop a connection server-side"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    listing = subprocess.run(
        [rabbitmqctl, "-q", "list_connections", "--no-table-headers", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    marker = f'{{"connection_name","{connection_name}"}}'
    pids = [line.split("\t")[0] for line in listing.stdout.splitlines() if marker in line]
    for pid in pids:
        subprocess.run(
            [rabbitmqctl, "-q", "close_connection", pid, "test: broker drops the connection"],
            capture_output=True,
            timeout=60,
            check=True,
        )
    return len(pids)
