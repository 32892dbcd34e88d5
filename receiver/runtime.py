"""The relay's parts for one process, built once: the resources (store, one shared
``httpx.AsyncClient``, providers, sinks, tokens, metrics) and the collaborators made
from them (``Ingestor``, ``Submitter``, ``Poller``, ``DeliveryWorker``), each given
only what it uses. The app's lifespan, ``relay worker``, ``relay submit``,
``work_once`` and the serverless handlers all build through ``Runtime.open``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from handlers.providers import PROVIDERS, Provider
from handlers.sinks import SINKS, Sink
from handlers.sinks.client import AiohttpClient
from receiver.decision import RetryPolicy
from receiver.errors import RelayError
from receiver.ingest import Ingestor
from receiver.logs import configured_secrets, register_secrets
from receiver.metrics import Metrics
from receiver.poller import Poller
from receiver.settings import Settings
from receiver.store import Store, open_store
from receiver.submission import Submitter
from receiver.tokens import CallbackTokens
from receiver.worker import DeliveryWorker

log = structlog.get_logger("relay.runtime")


@dataclass(frozen=True, slots=True)
class Runtime:
    """What ``Runtime.open`` built. Hand each consumer the part it needs, never this."""

    settings: Settings
    store: Store
    providers: dict[str, Provider]
    sinks: dict[str, Sink]
    metrics: Metrics
    ingestor: Ingestor
    submitter: Submitter
    poller: Poller

    def worker(self, *, grace_s: float = 0.0) -> DeliveryWorker:
        """A delivery worker over this process's store and sinks."""
        settings = self.settings
        return DeliveryWorker(
            self.store,
            self.sinks,
            RetryPolicy(
                settings.retry_schedule_s, settings.retry_jitter, settings.throttle_budget_s
            ),
            self.metrics,
            lease_s=settings.lease_s,
            grace_s=grace_s,
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, migrate: bool = True, store: Store | None = None
    ) -> AsyncIterator[Runtime]:
        """Open the store (migrating it), the shared HTTP clients (httpx for providers,
        aiohttp for the delivery path), every configured provider and sink; build the
        collaborators; close it all on exit. The configured secrets are registered for
        log redaction first."""
        register_secrets(configured_secrets(settings))
        store = store or open_store(settings.database_url)
        try:
            if migrate:
                await store.migrate()
            else:
                await store.ping()
        except RelayError:
            await store.close()
            raise
        import httpx  # here, not at import: a cold start does not pay for it

        client = httpx.AsyncClient(
            timeout=httpx.Timeout(15.0, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
        )
        providers = {
            name: PROVIDERS[name](config, client) for name, config in settings.providers.items()
        }
        sink_client = AiohttpClient()
        sinks = {
            name: SINKS[config.type](config, sink_client) for name, config in settings.sinks.items()
        }
        try:
            yield cls.build(settings, store, providers, sinks)
        finally:
            for sink in sinks.values():
                try:
                    await sink.aclose()
                except Exception:  # a sink failing to close must not keep others open
                    log.exception("sink.close_failed", sink=sink.config.name)
            await sink_client.aclose()
            await client.aclose()
            await store.close()

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: Store,
        providers: dict[str, Provider],
        sinks: dict[str, Sink],
    ) -> Runtime:
        """Wire the collaborators over already-open resources."""
        metrics = Metrics()
        tokens = CallbackTokens(settings.secret_keys, max_age_s=settings.callback_max_age_s)
        ingestor = Ingestor(store, providers, tokens, settings.routes, sinks, metrics)
        submitter = Submitter(
            store, providers, sinks, tokens, settings.public_url, metrics, ingestor.record
        )
        poller = Poller(
            store,
            providers,
            ingestor.record,
            submitter.dispatch_queued,
            metrics,
            tick_s=settings.poll_tick_s,
        )
        return cls(settings, store, providers, sinks, metrics, ingestor, submitter, poller)
