"""What a cold start imports: structlog without rich (receiver/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = """
import sys
import receiver.app
print("rich imported by the relay:", "rich" in sys.modules)
import rich
print("rich importable afterwards:", rich.MARK)
import structlog
from receiver.logs import configure_logging
configure_logging("console")
try:
    raise ValueError("boom")
except ValueError:
    structlog.get_logger("t").exception("it.failed")
"""


@pytest.fixture
def fake_rich(tmp_path: Path) -> Path:
    """A ``rich`` that stands out: first on the path, so any import of rich gets it."""
    package = tmp_path / "rich"
    package.mkdir()
    (package / "__init__.py").write_text("MARK = 'the fake'\n")
    return tmp_path


def test_structlog_is_imported_without_rich_and_rich_stays_importable(fake_rich: Path) -> None:
    """Importing the app leaves rich unimported (structlog would take it, ~100 ms of a
    cold start), rich imports normally afterwards, and a console log line still carries
    its traceback."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_rich), str(root)])}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "rich imported by the relay: False" in done.stdout
    assert "rich importable afterwards: the fake" in done.stdout
    assert "it.failed" in done.stderr
    assert "ValueError: boom" in done.stderr
