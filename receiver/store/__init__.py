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
    "split_schema",
]


def split_schema(database_url: str) -> tuple[str, str]:
    """``postgresql://…?schema=relay`` → (the URL without ``schema``, ``"relay"``);
    the schema defaults to ``public``."""
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), "public")
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def open_store(database_url: str) -> Store:
    """The backend for ``DATABASE_URL``: ``sqlite:///path`` or ``postgresql://…``
    (``?schema=name`` picks a PostgreSQL schema, default ``public``).

    Drivers import lazily: asyncpg is needed only for PostgreSQL.
    """
    if database_url.startswith(("postgresql://", "postgres://")):
        from receiver.store.postgres import PostgresStore

        dsn, schema = split_schema(database_url)
        return PostgresStore(dsn, schema=schema)
    from receiver.store.sqlite import SqliteStore

    return SqliteStore.from_url(database_url)
