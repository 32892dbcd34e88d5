"""The ASGI app factory. The lifespan builds the ``Runtime`` (store, HTTP client,
providers, sinks and the collaborators over them), hands the routes their parts through
the lifespan state, and (in the default in-process mode) runs the delivery worker and
the poller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from receiver.bootstrap import announce_generated, bootstrap, exit_on_user_error
from receiver.errors import ConfigError, RelayError
from receiver.gc_tuning import tuned_gc
from receiver.logs import RequestLogMiddleware, configured_secrets, register_secrets
from receiver.retention import run_retention
from receiver.routes import callbacks, deliveries, docs, health, jobs, stream, ui, upscales
from receiver.runtime import Runtime
from receiver.settings import DeliveryMode, Settings
from receiver.store import Store

log = structlog.get_logger("relay.app")
SHUTDOWN_GRACE_S = 5.0  # in-flight deliveries get this long to finish on shutdown


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> Starlette:
    """Build the relay app. Without ``settings`` it reads the environment (the
    Procfile's ``uvicorn receiver.app:create_app --factory``) and exits with the list
    of problems, not a traceback, when the configuration is bad."""
    if settings is None:
        with exit_on_user_error():
            settings = bootstrap()
        announce_generated(settings)
    resolved = settings
    register_secrets(configured_secrets(resolved))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if (
            resolved.database_url.startswith("sqlite")
            and resolved.delivery_mode is DeliveryMode.INLINE
        ):
            raise ConfigError(["RELAY_DELIVERY_MODE=inline needs a networked store (PostgreSQL)"])
        for warning in resolved.warnings:
            log.warning("config.warning", message=warning)
        async with Runtime.open(resolved, store=store) as runtime:
            # what the routes reach through ``request.state`` (receiver.routes.common)
            state: dict[str, Any] = {
                "settings": resolved,
                "store": runtime.store,
                "sinks": runtime.sinks,
                "metrics": runtime.metrics,
                "ingestor": runtime.ingestor,
                "submitter": runtime.submitter,
            }
            background: list[asyncio.Task[None]] = []
            if resolved.delivery_mode is DeliveryMode.INPROCESS:
                worker = runtime.worker(grace_s=SHUTDOWN_GRACE_S)
                state["worker"] = worker
                background.append(asyncio.create_task(worker.run(), name="relay-worker"))
                poller = runtime.poller.run()
                background.append(asyncio.create_task(poller, name="relay-poller"))
                pruner = run_retention(runtime.store, resolved.retention_days)
                background.append(asyncio.create_task(pruner, name="relay-retention"))
            elif resolved.delivery_mode is DeliveryMode.INLINE:
                state["inline_worker"] = runtime.worker()
            log.info(
                "relay.started",
                mode=resolved.delivery_mode.value,
                providers=sorted(runtime.providers),
                sinks=sorted(runtime.sinks),
            )
            try:
                with tuned_gc():
                    yield state
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)

    app = Starlette(
        routes=[
            # first: the hot path (the router tries routes in order; no other path
            # starts with /callbacks/, so nothing is shadowed)
            *callbacks.routes,
            *health.routes,
            *upscales.routes,
            *jobs.routes,
            *deliveries.routes,
            *stream.routes,
            *ui.routes,
            *docs.routes,
        ],
        middleware=[Middleware(RequestLogMiddleware)],
        exception_handlers={
            ClientDisconnect: _client_gone,
            RelayError: _relay_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.settings = resolved
    return app


CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away first"


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client closed the connection before its body arrived: nobody is left to
    answer. The request log line (status 499) is the only trace: no traceback, no 5xx."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RelayError)
    return JSONResponse(exc.body(), status_code=exc.http_status, headers=exc.headers())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": code, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("http.unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return JSONResponse(
        {"error": "internal_error", "message": "unexpected error; it has been logged"},
        status_code=500,
    )
