"""Faithful fakes of the providers' server side, one module per provider.

``relay simulate --port N`` serves all of them, each under ``/{provider}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from starlette.applications import Starlette
from starlette.routing import Mount

from simulators import apiframe, apimart, imaginepro, kie, useapi
from simulators.clock import WALL_CLOCK, Clock


class SimulatorFactory(Protocol):
    """A simulator's ``create_app``: the API key it accepts, and the clock its tasks use."""

    def __call__(self, api_key: str, *, clock: Clock = ...) -> Starlette: ...


#: provider name -> (app factory taking the API key, the key it accepts by default)
SIMULATORS: dict[str, tuple[SimulatorFactory, str]] = {
    "apiframe": (apiframe.create_app, apiframe.DEFAULT_KEY),
    "apimart": (apimart.create_app, apimart.DEFAULT_KEY),
    "imaginepro": (imaginepro.create_app, imaginepro.DEFAULT_KEY),
    "kie": (kie.create_app, kie.DEFAULT_KEY),
    "useapi": (useapi.create_app, useapi.DEFAULT_KEY),
}


def default_keys() -> dict[str, str]:
    return {name: key for name, (_factory, key) in SIMULATORS.items()}


def create_simulator_app(
    keys: Mapping[str, str] | None = None, *, clock: Clock = WALL_CLOCK
) -> Starlette:
    """All simulators under ``/{provider}``; ``keys`` overrides the API keys they accept
    and ``clock`` (real time by default; a test passes a ``ManualClock``) times their tasks."""
    keys = {**default_keys(), **(keys or {})}
    apps = {name: factory(keys[name], clock=clock) for name, (factory, _key) in SIMULATORS.items()}
    app = Starlette(routes=[Mount(f"/{name}", app=sub) for name, sub in apps.items()])
    app.state.providers = apps
    return app
