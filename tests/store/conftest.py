"""Fixtures for the store contract suite: every test runs against SQLite and PostgreSQL.

PostgreSQL comes from ``RELAY_TEST_PG`` (CI: ``postgresql://postgres@127.0.0.1:5432/test``);
each test gets its own random schema, dropped afterwards. Without ``RELAY_TEST_PG`` the
PostgreSQL half is skipped, loudly, unless ``CI=true``: then it fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from receiver.store import Store
from receiver.store.sqlite import SqliteStore

PG_ENV = "RELAY_TEST_PG"
PG_SKIP_REASON = (
    f"PostgreSQL store contract NOT TESTED: set {PG_ENV}=postgresql://postgres@127.0.0.1:5432/test"
)


def pg_dsn(environ: Mapping[str, str] = os.environ) -> str:
    """The test server's DSN; skip (locally) or fail (CI) when it is not configured."""
    dsn = environ.get(PG_ENV, "")
    if dsn:
        return dsn
    if environ.get("CI") == "true":
        pytest.fail(f"{PG_ENV} is unset under CI=true: the PostgreSQL store must be tested")
    pytest.skip(PG_SKIP_REASON)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly, at the very end, that half of the store contract did not run."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if PG_SKIP_REASON in str(report.longrepr)
    ]
    if skipped:
        terminalreporter.write_sep(
            "!", f"{len(skipped)} tests: {PG_SKIP_REASON}", yellow=True, bold=True
        )


async def pg_execute(dsn: str, sql: str) -> None:
    """Run one statement on a fresh connection; an unreachable server fails the test."""
    import asyncpg

    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_ENV} is unreachable: {exc!r}")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "relay.db"
        backend = Backend("sqlite", lambda: SqliteStore(path))
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
