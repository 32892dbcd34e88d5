"""upscale-relay: submit Midjourney upscales, verify provider callbacks, fan events out."""

import sys

__version__ = "0.1.0"


def _import_structlog_without_rich() -> None:
    """Import structlog with ``rich`` hidden from it.

    structlog imports rich whenever it is installed (for its console tracebacks; rich
    comes into a venv with many tools, schemathesis in ours): 80-150 ms of every cold
    start on the project's 2-core machine, a third of ``import receiver.app``. The relay
    never uses it: both log renderers get tracebacks already formatted
    (``format_exc_info``). Only structlog's import is affected: rich stays importable for
    everyone else, and nothing happens when either is imported already. (For the few
    milliseconds of structlog's import, another thread importing rich would fail; the
    relay's processes start no threads before this.)"""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes ``import rich`` fail
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()
