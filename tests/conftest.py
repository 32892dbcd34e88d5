"""Shared fixtures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import postgres
from tests.helpers.ci_log import CI_LOG
from tests.helpers.s3_server import moto_server

SHARED_FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(provider: str, name: str) -> Any:
    """A provider payload from tests/fixtures/<provider>/<name>.json."""
    return json.loads((SHARED_FIXTURES / provider / f"{name}.json").read_text())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 API on 127.0.0.1 (buckets persist for the session: use unique names)."""
    with moto_server() as url:
        yield url


SCALE_TESTS = Path(__file__).parent / "scale"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``, as ``make test`` runs) the scale tests
    share one worker: each starts several relay processes with PostgreSQL pools, and side
    by side they would compete for the server's connections and for the CPUs."""
    for item in items:
        if SCALE_TESTS in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("scale"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The tests' ``ci_log`` lines, and a banner when PostgreSQL tests were skipped for
    want of ``RELAY_TEST_PG``: both read from the reports, which reach the controller
    under pytest-xdist too."""
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call":
                continue
            for name, text in getattr(report, "user_properties", ()):
                if name == CI_LOG:
                    terminalreporter.write_line(f"{report.nodeid}: {text}")
    reports = terminalreporter.stats.get("skipped", [])
    skipped = [r for r in reports if postgres.PG_SKIP_REASON in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_sep(
            "!",
            f"{len(skipped)} tests: {postgres.PG_SKIP_REASON}",
            yellow=True,
            bold=True,
        )
