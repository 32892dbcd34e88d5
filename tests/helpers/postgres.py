"""The PostgreSQL test server: its DSN, one-off statements, and throwaway schemas.

The DSN comes from ``RELAY_TEST_PG`` (CI: ``postgresql://postgres@127.0.0.1:5432/test``).
Without it, PostgreSQL tests skip, loudly (the root conftest prints a banner), unless
``CI=true``: then they fail, as does an unreachable server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

PG_ENV = "RELAY_TEST_PG"
PG_SKIP_REASON = f"PostgreSQL tests NOT RUN: set {PG_ENV}=postgresql://postgres@127.0.0.1:5432/test"


def pg_dsn(environ: Mapping[str, str] | None = None) -> str:
    """The test server's DSN; skip (locally) or fail (CI) when it is not configured."""
    env = os.environ if environ is None else environ
    dsn = env.get(PG_ENV, "")
    if dsn:
        return dsn
    if env.get("CI") == "true":
        pytest.fail(f"{PG_ENV} is unset under CI=true: the PostgreSQL store must be tested")
    pytest.skip(PG_SKIP_REASON)  # the root conftest counts these skips for its banner


async def pg_execute(dsn: str, sql: str, *args: Any) -> None:
    """Run one statement on a fresh connection; an unreachable server fails the test."""
    await pg_fetch(dsn, sql, *args)


@asynccontextmanager
async def pg_connect(dsn: str, schema: str | None = None) -> AsyncIterator[Any]:
    """An asyncpg connection (``schema`` as its search path); unreachable fails the test."""
    import asyncpg

    settings = {"search_path": schema} if schema else None
    try:
        connection = await asyncpg.connect(dsn, timeout=5, server_settings=settings)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_ENV} is unreachable: {exc!r}")
    try:
        yield connection
    finally:
        await connection.close()


async def pg_fetch(dsn: str, sql: str, *args: Any, schema: str | None = None) -> list[Any]:
    """The rows of one query on a fresh connection (``schema`` as its search path)."""
    async with pg_connect(dsn, schema) as connection:
        return list(await connection.fetch(sql, *args))


@dataclass(frozen=True)
class PgSchema:
    """A schema of its own on the test server, for one test."""

    dsn: str
    schema: str

    @property
    def database_url(self) -> str:
        """``DATABASE_URL`` selecting this schema."""
        joiner = "&" if "?" in self.dsn else "?"
        return f"{self.dsn}{joiner}schema={self.schema}"

    def connect(self) -> AbstractAsyncContextManager[Any]:
        """An asyncpg connection inside this schema."""
        return pg_connect(self.dsn, self.schema)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """Rows of ``sql`` run inside this schema."""
        return await pg_fetch(self.dsn, sql, *args, schema=self.schema)


@asynccontextmanager
async def pg_schema() -> AsyncIterator[PgSchema]:
    """A fresh random schema name (not created: the store's ``migrate`` does that),
    dropped with everything in it on exit."""
    dsn = pg_dsn()
    await pg_execute(dsn, "SELECT 1")
    schema = PgSchema(dsn, f"relay_test_{secrets.token_hex(6)}")
    try:
        yield schema
    finally:
        await pg_execute(dsn, f"DROP SCHEMA IF EXISTS {schema.schema} CASCADE")
