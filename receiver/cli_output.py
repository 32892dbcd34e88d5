"""How ``relay`` verbs print results: a readable table on a terminal, JSON lines with
``--json`` or when stdout is not a terminal (a pipe, a file), and a sentence when there
is nothing to show (on stderr in JSON mode, so stdout stays parseable)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

MAX_CELL = 48


def wants_json(flag: bool) -> bool:
    """JSON when asked, or when stdout is not a terminal."""
    return flag or not sys.stdout.isatty()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        value = ",".join(map(str, value)) or "-"
    text = str(value)
    if len(text) >= 20 and text[4:5] == "-" and "T" in text[10:11]:
        text = text[:19].replace("T", " ")  # an ISO timestamp, to the second
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as an aligned text table of ``columns``."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [
        "  ".join(part.ljust(width) for part, width in zip(line, widths, strict=True)).rstrip()
        for line in [list(columns), *cells]
    ]
    return "\n".join(lines)


def print_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, as_json: bool, empty: str
) -> None:
    """Print ``rows``: JSON lines or a table; ``empty`` when there are none."""
    if not rows:
        print(empty, file=sys.stderr if as_json else sys.stdout)
        return
    if as_json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
    else:
        print(table(rows, columns))


def print_result(value: Mapping[str, Any], text: str, *, as_json: bool) -> None:
    """One result: a JSON object, or ``text`` for a person."""
    print(json.dumps(dict(value), sort_keys=True) if as_json else text)
