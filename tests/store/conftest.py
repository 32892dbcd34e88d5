"""Fixtures for the store contract suite: every test runs against SQLite (with its writer
thread, and inline on the loop as ``relay worker`` runs it) and PostgreSQL.

PostgreSQL comes from ``RELAY_TEST_PG`` (CI: ``postgresql://postgres@127.0.0.1:5432/test``);
each test gets its own random schema, dropped afterwards. Without ``RELAY_TEST_PG`` the
PostgreSQL half is skipped, loudly, unless ``CI=true``: then it fails.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from receiver.store import Store
from receiver.store.sqlite import SqliteStore
from tests.helpers.postgres import PG_ENV, pg_dsn, pg_execute

__all__ = ["PG_ENV", "Backend", "pg_dsn", "pg_execute"]


@dataclass
class Backend:
    """One test's database: ``open()`` gives another (unmigrated) store on it."""

    name: str
    factory: Callable[[], Store]
    opened: list[Store] = field(default_factory=list)
    dsn: str = ""
    schema: str = ""

    def open(self) -> Store:
        store = self.factory()
        self.opened.append(store)
        return store


@pytest.fixture(
    params=["sqlite", "sqlite-inline", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param.startswith("sqlite"):
        # sqlite-inline: the operations run on the loop's thread (``relay worker``)
        path = tmp_path / "relay.db"
        inline = request.param == "sqlite-inline"
        backend = Backend("sqlite", lambda: SqliteStore(path, inline=inline))
        try:
            yield backend
        finally:
            for store in backend.opened:
                await store.close()
        return

    from receiver.store.postgres import PostgresStore

    dsn = pg_dsn()
    schema = f"relay_test_{secrets.token_hex(6)}"
    await pg_execute(dsn, "SELECT 1")
    backend = Backend("postgres", lambda: PostgresStore(dsn, schema=schema), dsn=dsn, schema=schema)
    try:
        yield backend
    finally:
        for store in backend.opened:
            await store.close()
        await pg_execute(dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
async def store(backend: Backend) -> Store:
    """A migrated store on a fresh database."""
    store = backend.open()
    await store.migrate()
    return store
