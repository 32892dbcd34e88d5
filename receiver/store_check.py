"""Reaching the store before a command relies on it, and one-line explanations of why
it could not be reached (never a driver's traceback).

``probe_store(url)`` opens nothing it would have to create: a SQLite file that does
not exist is reported (or refused with ``must_exist``), PostgreSQL gets one short
connection. ``store_failure(exc, url)`` turns what a driver raises into a
``StartupError`` naming the store, with the password left out.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from receiver.errors import RelayError

CONNECT_TIMEOUT_S = 5.0


class StartupError(RelayError):
    """Something outside the config stops a command: the port is taken, the store is
    unreachable, a file cannot be written. Printed as one line; exit status 1."""

    code = "startup_error"


def describe_url(url: str) -> str:
    """The store URL as it may be shown: ``postgresql://user@host:5432/db`` (no password)."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or "localhost"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}{query}"


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///…`` URL."""
    return Path(url[len("sqlite:///") :])


def require_sqlite_file(url: str) -> None:
    """For read-only commands: a SQLite store that does not exist is an error, rather
    than a fresh empty file created as a side effect."""
    if url.startswith("sqlite:///") and not sqlite_path(url).exists():
        raise StartupError(
            f"no store at {sqlite_path(url).resolve()} (DATABASE_URL={url}): set DATABASE_URL to "
            "the relay's store, or create one with `relay migrate`"
        )


async def probe_store(url: str, *, must_exist: bool = False) -> str:
    """Reach the store and say what was reached (``SQLite /abs/relay.db, schema
    version 3 of 3``); ``StartupError`` when it cannot be reached."""
    if url.startswith("sqlite:///"):
        return _probe_sqlite(url, must_exist=must_exist)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S + 1):
            return await _probe_postgres(url)
    except Exception as exc:
        raise store_failure(exc, url) from None


def _latest(schema_module: str) -> int:
    if schema_module == "sqlite":
        from receiver.store.sqlite_schema import MIGRATIONS
    else:
        from receiver.store.postgres_schema import MIGRATIONS
    return MIGRATIONS[-1][0]


def _probe_sqlite(url: str, *, must_exist: bool) -> str:
    path = sqlite_path(url).resolve()
    if not path.exists():
        if must_exist:
            require_sqlite_file(url)
        ancestor = next(p for p in path.parents if p.exists())
        if not ancestor.is_dir():
            raise StartupError(
                f"cannot create the SQLite store {path}: {ancestor} is not a directory"
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise StartupError(f"cannot create the SQLite store {path}: {ancestor} is not writable")
        return f"SQLite {path} (does not exist yet: `relay serve` or `relay migrate` creates it)"
    if path.is_dir():
        raise StartupError(f"DATABASE_URL names {path}, which is a directory")
    if not os.access(path, os.R_OK | os.W_OK):
        raise StartupError(f"cannot open the SQLite store {path}: permission denied")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = _sqlite_version(connection)
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise store_failure(exc, url) from None
    return f"SQLite {path}, {_version_text(version, _latest('sqlite'))}"


def _sqlite_version(connection: sqlite3.Connection) -> int | None:
    found = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if found is None:
        return None
    return int(
        connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    )


def _version_text(version: int | None, latest: int) -> str:
    if not version:
        return "not migrated yet (the relay migrates it when it starts)"
    return f"schema version {version} of {latest}"


async def _probe_postgres(url: str) -> str:
    try:
        import asyncpg
    except ImportError:
        raise StartupError(
            "DATABASE_URL is PostgreSQL but asyncpg is not installed: "
            "pip install 'upscale-relay[postgres]'"
        ) from None
    from receiver.store import split_param, split_schema

    dsn, schema = split_schema(url)
    dsn = split_param(dsn, "pool_max")[0]  # the relay's own parameter, not asyncpg's
    connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        server = str(await connection.fetchval("SHOW server_version")).split()[0]
        table = await connection.fetchval(
            "SELECT to_regclass($1)::text", f"{schema}.schema_version"
        )
        version = None
        if table is not None:
            version = await connection.fetchval(
                f"SELECT COALESCE(MAX(version), 0) FROM {schema}.schema_version"
            )
    finally:
        await connection.close()
    latest = _latest("postgres")
    return (
        f"PostgreSQL {server} at {describe_url(url)}, schema {schema}, "
        f"{_version_text(version, latest)}"
    )


def store_failure(exc: BaseException, url: str) -> StartupError:
    """A one-line ``StartupError`` for what a store driver raised."""
    if isinstance(exc, StartupError):
        return exc
    where = describe_url(url)
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "unable to open" in text:
            path = sqlite_path(url).resolve()
            return StartupError(
                f"cannot open the SQLite store {path}: {text} "
                "(does its directory exist, and may the relay write there?)"
            )
        if "not a database" in text:
            return StartupError(f"{sqlite_path(url)} is not a SQLite database ({text})")
        return StartupError(f"SQLite store {sqlite_path(url)}: {text}")
    if isinstance(exc, TimeoutError):
        return StartupError(f"cannot reach {where}: no answer within {CONNECT_TIMEOUT_S:g} s")
    if isinstance(exc, socket.gaierror):
        return StartupError(f"cannot reach {where}: unknown host")
    if isinstance(exc, PermissionError):
        return StartupError(f"permission denied: {exc.filename or where}")
    if isinstance(exc, ConnectionRefusedError) or "connect call failed" in str(exc).lower():
        return StartupError(f"cannot reach {where}: connection refused (is the server running?)")
    if isinstance(exc, OSError):
        reason = (exc.strerror or str(exc) or type(exc).__name__).split(":")[-1].strip()
        return StartupError(f"cannot reach {where}: {reason.lower()}")
    password = urlsplit(url).password if "://" in url else None
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if password:
        text = text.replace(password, "***")
    if type(exc).__module__.startswith("asyncpg"):
        return StartupError(f"PostgreSQL at {where} refused: {text}")
    return StartupError(f"store {where}: {type(exc).__name__}: {text}")
