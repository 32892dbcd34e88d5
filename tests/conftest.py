"""Shared fixtures."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import postgres
from tests.helpers.ci_log import CI_LOG
from tests.helpers.s3_server import moto_server

SHARED_FIXTURES = Path(__file__).parent / "fixtures"
#: The coverage gate when PostgreSQL tests are skipped (no ``RELAY_TEST_PG``, not CI):
#: the PostgreSQL store and inline delivery then go unrun, so ``fail_under`` in
#: pyproject.toml (CI's figure) would fail a fresh machine's ``make test``.
FAIL_UNDER_WITHOUT_POSTGRES = 90.0  # 91.6 % measured without PostgreSQL


def pytest_configure(config: pytest.Config) -> None:
    """Lower the coverage gate to ``FAIL_UNDER_WITHOUT_POSTGRES`` when the PostgreSQL
    tests will skip; CI (``CI=true``) never skips them and keeps the full gate."""
    coverage = config.pluginmanager.getplugin("_cov")
    options = getattr(coverage, "options", None)
    if options is None or os.environ.get(postgres.PG_ENV) or os.environ.get("CI") == "true":
        return
    gate = getattr(options, "cov_fail_under", None)
    if gate is not None and gate > FAIL_UNDER_WITHOUT_POSTGRES:
        options.cov_fail_under = FAIL_UNDER_WITHOUT_POSTGRES


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
