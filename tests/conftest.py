"""Shared fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED_FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(provider: str, name: str) -> Any:
    """A provider payload from tests/fixtures/<provider>/<name>.json."""
    return json.loads((SHARED_FIXTURES / provider / f"{name}.json").read_text())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
