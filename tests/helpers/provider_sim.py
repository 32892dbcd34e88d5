"""A provider adapter driving its simulator over real sockets, with a recording
receiver standing in for the relay's callback endpoint."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from handlers.providers import PROVIDERS, Provider, ProviderConfig, SubmitSpec
from receiver.events import ProviderUpdate, new_id
from simulators import create_simulator_app, default_keys
from simulators.clock import WALL_CLOCK, Clock
from tests.helpers.servers import serve_app


class CallbackInbox:
    """Stands in for the relay's ``POST /callbacks/...``: keeps each JSON body by the
    job id in its path, and answers 200."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[Any]] = defaultdict(list)
        self.headers: list[dict[str, str]] = []

    async def _receive(self, request: Request) -> Response:
        self.headers.append(dict(request.headers))
        self.bodies[request.path_params["job_id"]].append(json.loads(await request.body()))
        return Response("ok")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/callbacks/{job_id}", self._receive, methods=["POST"])])


@dataclass
class SimEnv:
    """``provider`` points at ``sim`` (mounted under ``/{name}``, as ``relay simulate``
    serves it); callbacks land in ``inbox`` at ``receiver_url``."""

    provider: Provider
    sim: Any
    sim_url: str
    inbox: CallbackInbox
    receiver_url: str
    client: httpx.AsyncClient

    def spec(self, action: str, parent_id: str, *, callback: bool = True) -> SubmitSpec:
        job_id = new_id("job")
        return SubmitSpec(
            job_id=job_id,
            parent_id=parent_id,
            action=action,
            callback_url=f"{self.receiver_url}/callbacks/{job_id}" if callback else None,
            callback_secret=None,
        )

    def bodies_for(self, job_id: str) -> list[Any]:
        """Callback bodies received for one of our jobs (by the job id in the URL)."""
        return list(self.inbox.bodies.get(job_id, []))

    async def callbacks(self, job_id: str, count: int, timeout: float = 20.0) -> list[Any]:
        """Wait for ``count`` callback bodies for ``job_id``."""
        async with asyncio.timeout(timeout):
            while len(self.bodies_for(job_id)) < count:
                await asyncio.sleep(0.01)
        return self.bodies_for(job_id)

    async def poll_until_done(self, task_id: str, timeout: float = 5.0) -> list[ProviderUpdate]:
        """Poll until a terminal update; returns every update seen."""
        seen: list[ProviderUpdate] = []
        async with asyncio.timeout(timeout):
            while not seen or not seen[-1].state.terminal:
                seen.append(await self.provider.poll(task_id))
                await asyncio.sleep(0.01)
        return seen


@asynccontextmanager
async def provider_against_simulator(
    name: str, *, max_jobs: int | None = None, clock: Clock = WALL_CLOCK
) -> AsyncIterator[SimEnv]:
    """Serve every simulator and a callback inbox on 127.0.0.1; yield ``name``'s adapter
    configured against its simulator, its tasks timed by ``clock``. Drains the
    simulator's callbacks on exit (with a ``ManualClock``, advance it past them first)."""
    simulators = create_simulator_app(clock=clock)
    inbox = CallbackInbox()
    provider_cls = PROVIDERS[name]
    # one server for both: the inbox under /inbox, the simulators beside it
    app = Starlette(routes=[Mount("/inbox", app=inbox.app()), Mount("", app=simulators)])
    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_app(app))
        receiver_url = f"{sim_url}/inbox"
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=5))
        config = ProviderConfig(
            name=name,
            api_key=default_keys()[name],
            base_url=f"{sim_url}/{name}",
            max_jobs=max_jobs or provider_cls.max_jobs_default,
        )
        sim = simulators.state.providers[name]
        try:
            yield SimEnv(provider_cls(config, client), sim, sim_url, inbox, receiver_url, client)
        finally:
            await sim.state.sender.drain()
