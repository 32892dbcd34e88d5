"""Faithful fakes of the providers' server side, one module per provider.

``relay simulate --port N`` serves all of them, each under ``/{provider}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.applications import Starlette
from starlette.routing import Mount

from simulators import apiframe, apimart, imaginepro, kie, useapi

#: provider name -> (app factory taking the API key, the key it accepts by default)
SIMULATORS: dict[str, tuple[Callable[[str], Starlette], str]] = {
    "apiframe": (apiframe.create_app, apiframe.DEFAULT_KEY),
    "apimart": (apimart.create_app, apimart.DEFAULT_KEY),
    "imaginepro": (imaginepro.create_app, imaginepro.DEFAULT_KEY),
    "kie": (kie.create_app, kie.DEFAULT_KEY),
    "useapi": (useapi.create_app, useapi.DEFAULT_KEY),
}


def default_keys() -> dict[str, str]:
    return {name: key for name, (_factory, key) in SIMULATORS.items()}


def create_simulator_app(keys: Mapping[str, str] | None = None) -> Starlette:
    """All simulators under ``/{provider}``; ``keys`` overrides the API keys they accept."""
    keys = {**default_keys(), **(keys or {})}
    apps = {name: factory(keys[name]) for name, (factory, _key) in SIMULATORS.items()}
    app = Starlette(routes=[Mount(f"/{name}", app=sub) for name, sub in apps.items()])
    app.state.providers = apps
    return app
