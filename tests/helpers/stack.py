"""The relay, the provider simulators and a recording downstream, all on real sockets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from receiver.app import create_app
from receiver.settings import Settings, load_settings
from simulators import create_simulator_app, default_keys
from tests.helpers.recorder import Recorder
from tests.helpers.servers import reserve_socket, serve_app, socket_port

API_TOKEN = "test-api-token"
SECRET_KEY = "test-secret-key"
SINK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@dataclass
class Stack:
    base_url: str
    sim_url: str
    simulators: Starlette
    recorder: Recorder
    settings: Settings
    api: httpx.AsyncClient
    events_path: Path

    def sim(self, provider: str) -> Any:
        """The simulator app of one provider (its ``state.book`` has the tasks)."""
        return self.simulators.state.providers[provider]

    async def submit(
        self, expect: int = 202, headers: Mapping[str, str] | None = None, **body: Any
    ) -> Any:
        response = await self.api.post("/v1/upscales", json=body, headers=dict(headers or {}))
        assert response.status_code == expect, response.text
        return response.json()

    async def job(self, job_id: str) -> Any:
        response = await self.api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_job(self, job_id: str, status: str, timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                job = await self.job(job_id)
                if job["status"] == status:
                    return job
                await asyncio.sleep(0.02)

    async def deliveries(self, **params: str) -> list[Any]:
        response = await self.api.get("/v1/deliveries", params=params)
        assert response.status_code == 200, response.text
        deliveries: list[Any] = response.json()["deliveries"]
        return deliveries

    async def wait_deliveries(self, count: int, timeout: float = 10.0, **params: str) -> list[Any]:
        async with asyncio.timeout(timeout):
            while True:
                found = await self.deliveries(**params)
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.02)


def stack_config(
    sim_url: str,
    sink_url: str,
    events_path: Path,
    extra: str = "",
    provider_options: Mapping[str, str] | None = None,
    http_sink_options: str = "",
) -> str:
    """Every simulated provider, an http sink (the recorder) and a file sink;
    ``provider_options`` adds TOML lines inside a provider's table,
    ``http_sink_options`` inside the http sink's."""
    options = provider_options or {}
    providers = "\n".join(
        f'[providers.{name}]\napi_key = "{key}"\nbase_url = "{sim_url}/{name}"\n'
        f"{options.get(name, '')}\n"
        for name, key in default_keys().items()
    )
    return f"""
[delivery]
retry_schedule_s = [0, 0.05, 0.05, 0.05, 0.05]
jitter = 0

[relay]
poll_tick_s = 0.05
# the image hosts of these tests are on 127.0.0.1
allow_private_image_urls = true

{providers}
[sinks.http]
type = "http"
url = "{sink_url}"
secret = "{SINK_SECRET}"
{http_sink_options}

[sinks.file]
type = "file"
path = "{events_path}"

{extra}
"""


@asynccontextmanager
async def running_stack(
    tmp_path: Path,
    *,
    extra_config: str = "",
    env: Mapping[str, str] | None = None,
    recorder: Recorder | None = None,
    port: int | None = None,
    provider_options: Mapping[str, str] | None = None,
    http_sink_options: str = "",
) -> AsyncIterator[Stack]:
    """Start simulators, a recorder and the relay (SQLite in ``tmp_path``)."""
    recorder = recorder or Recorder()
    simulators = create_simulator_app()
    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(simulators))
        sink_url = await stack.enter_async_context(serve_app(recorder.app()))
        sock = reserve_socket(port or 0)  # held: no other test can take it meanwhile
        port = socket_port(sock)
        events_path = tmp_path / "events.jsonl"
        settings = load_settings(
            {
                "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
                "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "RELAY_SECRET_KEY": SECRET_KEY,
                "RELAY_API_TOKEN": API_TOKEN,
                **(env or {}),
            },
            config_text=stack_config(
                sim_url,
                sink_url + "/hooks",
                events_path,
                extra_config,
                provider_options,
                http_sink_options,
            ),
        )
        base_url = await stack.enter_async_context(serve_app(create_app(settings), sock=sock))
        api = await stack.enter_async_context(
            httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {API_TOKEN}"})
        )
        yield Stack(base_url, sim_url, simulators, recorder, settings, api, events_path)
