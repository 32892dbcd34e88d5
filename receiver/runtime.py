"""The relay's live resources for one process: store, HTTP client, providers, sinks,
tokens and metrics, opened and closed together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import structlog

from handlers.providers import PROVIDERS, Provider
from handlers.sinks import SINKS, Sink
from receiver.errors import NotFound, RelayError
from receiver.metrics import Metrics
from receiver.settings import Settings
from receiver.store import Store, open_store
from receiver.tokens import CallbackTokens

log = structlog.get_logger("relay.runtime")


@dataclass(slots=True)
class Relay:
    """Everything a request handler, the worker or the poller needs."""

    settings: Settings
    store: Store
    client: httpx.AsyncClient
    providers: dict[str, Provider]
    sinks: dict[str, Sink]
    tokens: CallbackTokens
    metrics: Metrics = field(default_factory=Metrics)
    poll_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    submit_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    provider_not_before: dict[str, datetime] = field(default_factory=dict)

    def submit_lock(self, provider: str) -> asyncio.Lock:
        """Serialises count → submit → record for a provider with a concurrency cap, so
        concurrent submissions cannot overshoot ``max_jobs`` (within this process)."""
        return self.submit_locks.setdefault(provider, asyncio.Lock())

    def provider(self, name: str) -> Provider:
        """The configured provider called ``name``; ``NotFound`` otherwise."""
        provider = self.providers.get(name)
        if provider is None:
            raise NotFound(f"unknown provider {name!r}", provider=name)
        return provider

    def callback_url(self, job_id: str, provider: str) -> str:
        token = self.tokens.mint(job_id, provider)
        return f"{self.settings.public_url}/callbacks/{provider}/{token}"

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, migrate: bool = True, store: Store | None = None
    ) -> AsyncIterator[Relay]:
        """Open the store (migrating it), one shared ``httpx.AsyncClient``, and every
        configured provider and sink; close them all on exit."""
        store = store or open_store(settings.database_url)
        try:
            if migrate:
                await store.migrate()
            else:
                await store.ping()
        except RelayError:
            await store.close()
            raise
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(15.0, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
        )
        providers = {
            name: PROVIDERS[name](config, client) for name, config in settings.providers.items()
        }
        sinks = {
            name: SINKS[config.type](config, client) for name, config in settings.sinks.items()
        }
        relay = cls(
            settings=settings,
            store=store,
            client=client,
            providers=providers,
            sinks=sinks,
            tokens=CallbackTokens(settings.secret_keys, max_age_s=settings.callback_max_age_s),
        )
        try:
            yield relay
        finally:
            for sink in sinks.values():
                try:
                    await sink.aclose()
                except Exception:  # a sink failing to close must not keep others open
                    log.exception("sink.close_failed", sink=sink.config.name)
            await client.aclose()
            await store.close()
