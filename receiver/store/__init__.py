"""Storage backends behind the ``Store`` protocol, chosen by ``DATABASE_URL``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from receiver.store.base import DeliveryFilter, DeliveryOutcome, Ingest, JobLookup, Store

__all__ = [
    "DeliveryFilter",
    "DeliveryOutcome",
    "Ingest",
    "JobLookup",
    "Store",
    "open_store",
    "split_param",
    "split_schema",
]


def split_param(database_url: str, key: str) -> tuple[str, str | None]:
    """The URL without query parameter ``key``, and its value (``None`` when absent)."""
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    value = next((v for k, v in query if k == key), None)
    rest = urlencode([(k, v) for k, v in query if k != key])
    return urlunsplit(parts._replace(query=rest)), value


def split_schema(database_url: str) -> tuple[str, str]:
    """``postgresql://…?schema=relay`` → (the URL without ``schema``, ``"relay"``);
    the schema defaults to ``public``."""
    url, schema = split_param(database_url, "schema")
    return url, "public" if schema is None else schema


def open_store(database_url: str) -> Store:
    """The backend for ``DATABASE_URL``: ``sqlite:///path`` or ``postgresql://…``
    (``?schema=name`` picks a PostgreSQL schema, default ``public``; ``?pool_max=N``
    caps the connection pool, default 10). SQLite runs its statements on the event
    loop's thread of the store's first use (see ``InlineCommitter``): use the store
    from that loop only.

    Drivers import lazily: asyncpg is needed only for PostgreSQL.
    """
    if database_url.startswith(("postgresql://", "postgres://")):
        from receiver.store.postgres import PostgresStore

        dsn, schema = split_schema(database_url)
        dsn, pool_max = split_param(dsn, "pool_max")
        if pool_max is None:
            return PostgresStore(dsn, schema=schema)
        if not pool_max.isdigit() or int(pool_max) < 1:
            raise ValueError(f"pool_max in DATABASE_URL must be a whole number >= 1: {pool_max!r}")
        return PostgresStore(dsn, schema=schema, max_size=int(pool_max))
    from receiver.store.sqlite import SqliteStore

    return SqliteStore.from_url(database_url, inline=True)
