"""SQLite schema: numbered migrations, applied in order, each exactly once.

Times are INTEGER microseconds since the Unix epoch (UTC), exact both ways.
"""

from __future__ import annotations

import sqlite3
import time

from receiver.store import sqlite_observe

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                provider TEXT NOT NULL,
                parent_id TEXT NOT NULL,
                action TEXT NOT NULL,
                ref TEXT,
                status TEXT NOT NULL,
                callback_mode TEXT NOT NULL,
                provider_task_id TEXT,
                callback_secret TEXT,
                sinks TEXT,
                created_at INTEGER NOT NULL,
                submitted_at INTEGER,
                finished_at INTEGER,
                next_poll_at INTEGER,
                deadline_at INTEGER,
                poll_lease_until INTEGER
            )""",
            "CREATE INDEX jobs_by_task ON jobs (provider, provider_task_id)",
            "CREATE INDEX jobs_by_created ON jobs (created_at)",
            "CREATE INDEX jobs_by_ref ON jobs (ref) WHERE ref IS NOT NULL",
            "CREATE INDEX jobs_by_provider_status ON jobs (provider, status)",
            "CREATE INDEX jobs_pollable ON jobs (next_poll_at) WHERE next_poll_at IS NOT NULL",
            """CREATE TABLE idempotency_keys (
                key TEXT PRIMARY KEY,
                request_hash TEXT,
                job_id TEXT NOT NULL,
                created_at INTEGER NOT NULL
            )""",
            "CREATE INDEX idempotency_keys_by_job ON idempotency_keys (job_id)",
            """CREATE TABLE events (
                seq INTEGER PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                job_id TEXT,
                provider TEXT NOT NULL,
                provider_task_id TEXT NOT NULL,
                type TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at INTEGER NOT NULL
            )""",
            "CREATE INDEX events_by_job ON events (job_id)",
            """CREATE TABLE deliveries (
                seq INTEGER PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                event_id TEXT NOT NULL REFERENCES events (id),
                job_id TEXT,
                sink TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at INTEGER,
                last_status INTEGER,
                last_error TEXT,
                lease_owner TEXT,
                lease_until INTEGER,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                UNIQUE (event_id, sink)
            )""",
            "CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending'",
            "CREATE INDEX deliveries_by_job ON deliveries (job_id)",
            "CREATE INDEX deliveries_by_state_sink ON deliveries (state, sink)",
        ),
    ),
    (2, sqlite_observe.MIGRATION),  # delivery attempts, sink health, the stream's feed
)


def migrate(connection: sqlite3.Connection) -> int:
    """Apply pending migrations inside the caller's transaction; return the version."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    current = int(row[0])
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        for statement in statements:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
            (version, time.time_ns() // 1000),
        )
        current = version
    return current
