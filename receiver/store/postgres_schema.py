"""PostgreSQL schema: numbered migrations, applied in order under an advisory lock."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from receiver.errors import ConfigError
from receiver.store import postgres_observe

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import PoolConnectionProxy

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE jobs (
                id text PRIMARY KEY,
                provider text NOT NULL,
                parent_id text NOT NULL,
                action text NOT NULL,
                ref text,
                status text NOT NULL,
                callback_mode text NOT NULL,
                provider_task_id text,
                callback_secret text,
                sinks jsonb,
                created_at timestamptz NOT NULL,
                submitted_at timestamptz,
                finished_at timestamptz,
                next_poll_at timestamptz,
                deadline_at timestamptz,
                poll_lease_until timestamptz
            )""",
            "CREATE INDEX jobs_by_task ON jobs (provider, provider_task_id)",
            "CREATE INDEX jobs_by_created ON jobs (created_at)",
            "CREATE INDEX jobs_by_ref ON jobs (ref) WHERE ref IS NOT NULL",
            "CREATE INDEX jobs_by_provider_status ON jobs (provider, status)",
            "CREATE INDEX jobs_pollable ON jobs (next_poll_at) WHERE next_poll_at IS NOT NULL",
            """CREATE TABLE idempotency_keys (
                key text PRIMARY KEY,
                request_hash text,
                job_id text NOT NULL,
                created_at timestamptz NOT NULL
            )""",
            "CREATE INDEX idempotency_keys_by_job ON idempotency_keys (job_id)",
            """CREATE TABLE events (
                seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
                id text PRIMARY KEY,
                job_id text,
                provider text NOT NULL,
                provider_task_id text NOT NULL,
                type text NOT NULL,
                body text NOT NULL,
                created_at timestamptz NOT NULL
            )""",
            "CREATE INDEX events_by_job ON events (job_id, seq)",
            """CREATE TABLE deliveries (
                seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
                id text PRIMARY KEY,
                event_id text NOT NULL REFERENCES events (id),
                job_id text,
                sink text NOT NULL,
                state text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
                attempts integer NOT NULL DEFAULT 0,
                next_attempt_at timestamptz,
                last_status integer,
                last_error text,
                lease_owner text,
                lease_until timestamptz,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                UNIQUE (event_id, sink)
            )""",
            "CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending'",
            "CREATE INDEX deliveries_by_job ON deliveries (job_id)",
            "CREATE INDEX deliveries_by_state_sink ON deliveries (state, sink)",
        ),
    ),
    (2, postgres_observe.MIGRATION),  # delivery attempts, sink health, the stream's feed
)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def checked_schema(name: str) -> str:
    """``name`` if it is a plain lower-case identifier (it is spliced into SQL)."""
    if not _SCHEMA_NAME.fullmatch(name):
        raise ConfigError([f"PostgreSQL schema {name!r} must match {_SCHEMA_NAME.pattern}"])
    return name


async def migrate(connection: PoolConnectionProxy[Record], schema: str) -> int:
    """Create ``schema`` if needed and apply pending migrations; return the version.

    Holds a session advisory lock (per schema) throughout, so concurrent ``relay
    migrate`` runs queue up: the first applies, the others find nothing to do.
    """
    lock_key = f"upscale-relay:{schema}"
    await connection.execute("SELECT pg_advisory_lock(hashtext($1))", lock_key)
    try:
        exists = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
        )
        if not exists:
            await connection.execute(f"CREATE SCHEMA {schema}")
        await connection.execute(f"SET search_path TO {schema}")
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = int(
            await connection.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            async with connection.transaction():
                for statement in statements:
                    await connection.execute(statement)
                await connection.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)", version
                )
            current = version
        return current
    finally:
        await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", lock_key)
