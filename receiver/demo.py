"""``relay demo``: the whole pipeline on one machine with zero setup.

Starts the provider simulators, a local HTTP receiver that verifies Standard Webhooks
signatures, and the relay itself (SQLite, a file sink and an http sink), submits one
upscale through the Apiframe simulator, prints the ``upscale.completed`` event as it
arrives at both sinks, then keeps serving until interrupted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import shlex
import socket
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import structlog
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.app import create_app
from receiver.bootstrap import bind_socket
from receiver.logs import configure_logging
from receiver.settings import load_settings
from receiver.store_check import StartupError
from simulators import create_simulator_app, default_keys


def demo_config(sim_url: str, sink_url: str, events_path: Path, keys: dict[str, str]) -> str:
    """The TOML the demo runs with: every simulated provider, a file and an http sink."""
    providers = "\n".join(
        f'[providers.{name}]\napi_key = "{key}"\nbase_url = "{sim_url}/{name}"\n'
        for name, key in keys.items()
    )
    return f"""
[relay]
log_level = "warning"

{providers}
[sinks.file]
type = "file"
path = "{events_path}"

[sinks.local_http]
type = "http"
url = "{sink_url}"
secret = "${{DEMO_SINK_SECRET}}"

[[routes]]
events = ["upscale.*"]
sinks = ["file"]

[[routes]]
events = ["upscale.completed", "upscale.failed"]
sinks = ["local_http"]
"""


def receiver_app(secret: str, arrived: asyncio.Queue[tuple[float, dict[str, Any]]]) -> Starlette:
    """A downstream service that verifies each delivery's Standard Webhooks signature."""
    verifier = Webhook(secret)

    async def hook(request: Request) -> Response:
        body = await request.body()
        try:
            event = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        await arrived.put((time.perf_counter(), event))
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/hooks/upscales", hook, methods=["POST"])])


async def _start(app: Any, sock: socket.socket) -> uvicorn.Server:
    config = uvicorn.Config(app, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    server.__dict__["_task"] = task
    while not server.started:
        if task.done():
            task.result()
            raise StartupError(f"could not start a server on {sock.getsockname()}")
        await asyncio.sleep(0.02)
    return server


def export_lines(env: dict[str, str], names: tuple[str, ...]) -> list[str]:
    """Paste-ready ``export NAME=value`` lines for a shell."""
    return [f"export {name}={shlex.quote(env[name])}" for name in names]


EXPORTS = (
    "DATABASE_URL",
    "RELAY_CONFIG",
    "RELAY_PUBLIC_URL",
    "RELAY_API_TOKEN",
    "RELAY_SECRET_KEY",
    "DEMO_SINK_SECRET",
)


class Narrator:
    """A structlog processor for the demo: one readable line on stdout per recorded
    event and per delivery outcome; other lines below warning are dropped."""

    LEVELS = ("debug", "info")

    def __init__(self) -> None:
        self.types: dict[str, str] = {}

    def __call__(
        self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        line = self.line(event_dict)
        if line is not None:
            print(line, flush=True)
        if method in self.LEVELS:
            raise structlog.DropEvent
        return event_dict

    def line(self, entry: Mapping[str, Any]) -> str | None:
        name = entry.get("event")
        event_id = str(entry.get("event_id"))
        recorded = name == "callback.accepted" and entry.get("type")  # a callback's one line
        if name == "event.recorded" or recorded:
            self.types[event_id] = str(entry.get("type"))
            sinks = ", ".join(entry.get("sinks") or []) or "no sink"
            return (
                f"event     {entry.get('type')} {event_id} job {entry.get('job_id')} "
                f"({entry.get('provider')}) → {sinks}"
            )
        kind = self.types.get(event_id, "event")
        where = f"{kind} {event_id} → {entry.get('sink')} (attempt {entry.get('attempt')})"
        if name == "delivery.delivered":
            return f"delivery  delivered {where} in {entry.get('duration_ms')} ms"
        if name == "delivery.retry_scheduled":
            retry = f"retry in {entry.get('retry_in_s')} s"
            return f"delivery  failed {where}: {entry.get('error')}; {retry}"
        if name == "delivery.dead":
            return f"delivery  dead {where}: {entry.get('error') or entry.get('reason')}"
        return None


def narrate() -> None:
    """Put a ``Narrator`` in front of the configured structlog processors."""
    config = structlog.get_config()
    structlog.configure(
        processors=[Narrator(), *config["processors"]],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    logging.getLogger().setLevel(logging.WARNING)


async def run_demo(port: int | None, workdir: str) -> int:
    """Run the demo; returns an exit status."""
    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    events_path = root / "events.jsonl"
    events_path.unlink(missing_ok=True)
    port = port or int(os.environ.get("PORT", "8000"))
    relay_sock = bind_socket("127.0.0.1", port)
    sim_sock, sink_sock = bind_socket("127.0.0.1", 0), bind_socket("127.0.0.1", 0)
    sim_port, sink_port = sim_sock.getsockname()[1], sink_sock.getsockname()[1]
    sink_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{root / 'relay.db'}"),
        "RELAY_CONFIG": str(root / "relay.toml"),
        "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RELAY_SECRET_KEY": os.environ.get("RELAY_SECRET_KEY") or secrets.token_urlsafe(32),
        "RELAY_API_TOKEN": os.environ.get("RELAY_API_TOKEN") or secrets.token_urlsafe(24),
        "DEMO_SINK_SECRET": sink_secret,
        "PORT": str(port),
    }
    keys = default_keys()
    config_text = demo_config(
        f"http://127.0.0.1:{sim_port}",
        f"http://127.0.0.1:{sink_port}/hooks/upscales",
        events_path,
        keys,
    )
    (root / "relay.toml").write_text(config_text)
    settings = load_settings(env, config_text=config_text)
    configure_logging(settings.log_format, "info")
    narrate()
    print("relay demo: paste these to use the API and the CLI against this run:")
    for line in export_lines(env, EXPORTS):
        print(f"  {line}")
    print('  curl -H "Authorization: Bearer $RELAY_API_TOKEN" $RELAY_PUBLIC_URL/v1/jobs')
    print("  relay jobs; relay deliveries; relay check-config")

    arrived: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
    servers = [
        await _start(create_simulator_app(keys), sim_sock),
        await _start(receiver_app(sink_secret, arrived), sink_sock),
        await _start(create_app(settings), relay_sock),
    ]
    print(
        f"relay serving on http://127.0.0.1:{port} (simulators on :{sim_port}, "
        f"store {settings.database_url}, config {root / 'relay.toml'})",
        flush=True,
    )
    try:
        await _submit_and_watch(port, env["RELAY_API_TOKEN"], arrived, events_path)
        print(
            f"relay demo: still serving; dashboard http://127.0.0.1:{port}/ui (sign in with"
            f" RELAY_API_TOKEN), API docs http://127.0.0.1:{port}/docs; one line per event and"
            " delivery follows; press Ctrl-C to stop",
            flush=True,
        )
        await servers[-1].__dict__["_task"]
    finally:
        for server in servers:
            server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.gather(*(s.__dict__["_task"] for s in servers), return_exceptions=True)
        for sock in (relay_sock, sim_sock, sink_sock):
            sock.close()
    return 0


async def _submit_and_watch(
    port: int,
    token: str,
    arrived: asyncio.Queue[tuple[float, dict[str, Any]]],
    events_path: Path,
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        started = time.perf_counter()
        response = await client.post(
            "/v1/upscales",
            json={"provider": "apiframe", "parent_id": "demo-grid", "action": "U2", "ref": "demo"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": secrets.token_hex(8)},
        )
        response.raise_for_status()
        job = response.json()
        print(f"submitted {job['job_id']} to apiframe (task {job['provider_task_id']})")
        while True:
            at, event = await asyncio.wait_for(arrived.get(), timeout=30)
            if event["type"] == "upscale.completed":
                break
        # the callback committed the event; how long did it take to reach the sink?
        print(
            f"http sink: {event['type']} {event['id']} arrived {1000 * (at - started):.0f} ms "
            f"after submit (signature verified) image={event['data']['image_url']}"
        )
        for _ in range(100):
            lines = events_path.read_text().splitlines() if events_path.exists() else []
            match = [json.loads(line) for line in lines if event["id"] in line]
            if match:
                print(f"file sink: {match[0]['type']} {match[0]['id']} in {events_path}")
                break
            await asyncio.sleep(0.02)
