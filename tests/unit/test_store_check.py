"""Reaching the store before relying on it, and one-line reasons when it cannot be."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from receiver.store import open_store
from receiver.store.sqlite_schema import MIGRATIONS
from receiver.store_check import StartupError, describe_url, probe_store, store_failure
from tests.helpers.postgres import pg_schema


def test_store_urls_are_shown_without_their_password() -> None:
    """The password never reaches a message; the rest of the URL does."""
    url = "postgresql://relay:s3cret@db.internal:6543/relay?schema=blue"
    assert describe_url(url) == "postgresql://relay@db.internal:6543/relay?schema=blue"
    assert "s3cret" not in store_failure(RuntimeError("auth for s3cret failed"), url).message


def test_driver_failures_become_one_line() -> None:
    """What drivers raise maps to a sentence naming the store (never a traceback)."""
    pg = "postgresql://u:pw@db:5432/x"
    cases = {
        TimeoutError(): "cannot reach postgresql://u@db:5432/x: no answer within 5 s",
        socket.gaierror(-2, "Name or service not known"): "unknown host",
        ConnectionRefusedError(111, "Connect call failed"): "connection refused",
        OSError(113, "No route to host"): "cannot reach postgresql://u@db:5432/x: no route to host",
    }
    for exc, expected in cases.items():
        assert expected in store_failure(exc, pg).message
    refused = type("InvalidPasswordError", (Exception,), {"__module__": "asyncpg.exceptions"})
    message = store_failure(refused('password authentication failed for user "u"'), pg).message
    assert message == (
        "PostgreSQL at postgresql://u@db:5432/x refused: "
        'password authentication failed for user "u"'
    )
    locked = store_failure(
        sqlite3.OperationalError("unable to open database file"), "sqlite:///x/r.db"
    )
    assert "cannot open the SQLite store" in locked.message
    assert "may the relay write there?" in locked.message


async def test_sqlite_probe_reports_the_file_its_version_or_its_absence(tmp_path: Path) -> None:
    """A missing file is reported (or refused when it must exist), a store its schema
    version, a file that is not SQLite a one-line error."""
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    assert "does not exist yet" in await probe_store(url)
    with pytest.raises(StartupError, match="no store at"):
        await probe_store(url, must_exist=True)
    assert not (tmp_path / "relay.db").exists()
    store = open_store(url)
    await store.migrate()
    await store.close()
    latest = MIGRATIONS[-1][0]
    assert (
        await probe_store(url)
        == f"SQLite {tmp_path / 'relay.db'}, schema version {latest} of {latest}"
    )
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StartupError, match="is not a SQLite database"):
        await probe_store(f"sqlite:///{tmp_path / 'junk.db'}")


@pytest.mark.postgres
async def test_postgres_probe_names_server_schema_and_version() -> None:
    """On PostgreSQL the probe names the server version, the schema and its migration."""
    async with pg_schema() as pg:
        before = await probe_store(pg.database_url)
        assert before.startswith("PostgreSQL ")
        assert f"schema {pg.schema}, not migrated yet" in before
        store = open_store(pg.database_url)
        await store.migrate()
        await store.close()
        assert "schema version" in await probe_store(pg.database_url)
