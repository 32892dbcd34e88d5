"""Storage backends behind the ``Store`` protocol, chosen by ``DATABASE_URL``."""

from __future__ import annotations

from receiver.store.base import DeliveryFilter, Ingest, Store

__all__ = ["DeliveryFilter", "Ingest", "Store", "open_store"]


def open_store(database_url: str) -> Store:
    """The backend for ``DATABASE_URL``: ``sqlite:///path`` or ``postgresql://…``.

    Drivers import lazily: asyncpg is needed only for PostgreSQL.
    """
    if database_url.startswith(("postgresql://", "postgres://")):
        from receiver.store.postgres import PostgresStore

        return PostgresStore(database_url)
    from receiver.store.sqlite import SqliteStore

    return SqliteStore.from_url(database_url)
