"""AWS Lambda entry points: ``receiver.serverless:handler`` (Mangum around the app,
behind an API Gateway HTTP API) and ``receiver.serverless:worker_handler`` (on a
schedule, e.g. an EventBridge rule every minute).

Serverless runs with ``RELAY_DELIVERY_MODE=inline``: a callback commits its event, then
delivers within ``delivery.inline_budget_s`` (default 5 s) before it answers; whatever
remains (retries, sinks that were slow or down, polls) is done by ``worker_handler``,
which does what ``relay worker --once`` does. A function has no disk that outlives it,
so a networked store (PostgreSQL) is required.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from receiver.errors import ConfigError
from receiver.settings import DeliveryMode, Settings

WORKER_BUDGET_S = 50.0  # as ``relay worker --once``
WORKER_MARGIN_S = 5.0  # left of the invocation's time for closing the store and answering

_handler: Any = None
_worker_handler: Any = None

WorkerHandler = Callable[[Mapping[str, Any], Any], dict[str, int]]


def _networked_store(settings: Settings) -> list[str]:
    if settings.database_url.startswith("sqlite"):
        return [
            "serverless needs a networked store: set DATABASE_URL to postgresql://… (SQLite "
            "files do not survive between function invocations)"
        ]
    return []


def build_handler(settings: Settings) -> Any:
    """A Mangum handler for ``settings``; refuses SQLite and non-inline delivery."""
    from mangum import Mangum

    from receiver.app import create_app

    problems = _networked_store(settings)
    if settings.delivery_mode is not DeliveryMode.INLINE:
        problems.append("serverless needs RELAY_DELIVERY_MODE=inline")
    if problems:
        raise ConfigError(problems)
    return Mangum(create_app(settings), lifespan="auto")


def build_worker_handler(settings: Settings) -> WorkerHandler:
    """A scheduled-event handler for ``settings`` doing what ``relay worker --once``
    does, within the invocation's remaining time (less a margin); refuses SQLite."""
    from receiver.once import work_once

    problems = _networked_store(settings)
    if problems:
        raise ConfigError(problems)

    def work(event: Mapping[str, Any], context: Any) -> dict[str, int]:
        budget_s = WORKER_BUDGET_S
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if remaining_ms is not None:
            budget_s = min(budget_s, max(1.0, remaining_ms() / 1000 - WORKER_MARGIN_S))
        return {"attempted": asyncio.run(work_once(settings, budget_s))}

    return work


def _settings() -> Settings:
    from receiver.bootstrap import bootstrap

    return bootstrap()


def handler(event: Mapping[str, Any], context: Any) -> Any:
    """The HTTP Lambda handler; settings are read from the environment on the first call."""
    global _handler
    if _handler is None:
        _handler = build_handler(_settings())
    return _handler(event, context)


def worker_handler(event: Mapping[str, Any], context: Any) -> dict[str, int]:
    """The scheduled Lambda handler; settings are read from the environment on the first
    call. Returns ``{"attempted": n}``, the deliveries it attempted."""
    global _worker_handler
    if _worker_handler is None:
        _worker_handler = build_worker_handler(_settings())
    result: dict[str, int] = _worker_handler(event, context)
    return result
