"""Unit-test fixtures: a real (migrated) SQLite store in a temporary file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "relay.db")
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()
