"""AWS Lambda entry point: ``receiver.serverless:handler`` (Mangum around the app).

Serverless runs with ``RELAY_DELIVERY_MODE=inline``: a callback commits its event, then
delivers within ``delivery.inline_budget_s`` (default 5 s) before it answers; whatever
remains is picked up by ``relay worker --once`` on a schedule. A function has no disk
that outlives it, so a networked store (PostgreSQL) is required.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.errors import ConfigError
from receiver.settings import DeliveryMode, Settings, load_settings

_handler: Any = None


def build_handler(settings: Settings) -> Any:
    """A Mangum handler for ``settings``; refuses SQLite and non-inline delivery."""
    from mangum import Mangum

    from receiver.app import create_app

    problems = []
    if settings.database_url.startswith("sqlite"):
        problems.append(
            "serverless needs a networked store: set DATABASE_URL to postgresql://… (SQLite "
            "files do not survive between function invocations)"
        )
    if settings.delivery_mode is not DeliveryMode.INLINE:
        problems.append("serverless needs RELAY_DELIVERY_MODE=inline")
    if problems:
        raise ConfigError(problems)
    return Mangum(create_app(settings), lifespan="auto")


def handler(event: Mapping[str, Any], context: Any) -> Any:
    """The Lambda handler; settings are read from the environment on the first call."""
    global _handler
    if _handler is None:
        _handler = build_handler(load_settings())
    return _handler(event, context)
