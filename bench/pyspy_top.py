"""Summarise a py-spy ``--format raw`` profile (as ``BENCH_PYSPY=dir`` writes them).

    .venv/bin/python bench/pyspy_top.py PROFILE.txt [--top 25] [--match TEXT]

Prints, per thread, the share of samples that are inside each function (inclusive), so
"where does the time go" reads off directly. ``--match`` keeps functions whose
``name (file)`` contains TEXT.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def frame_key(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    short = "/".join(path.split("/")[-2:])
    return f"{match['name']} ({short})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="")
    args = parser.parse_args()
    per_thread: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        if "idle" in thread:
            continue
        totals[thread] += count
        for key in {frame_key(f) for f in frames[1:]}:
            per_thread[thread][key] += count
    grand = sum(totals.values())
    for thread, total in totals.most_common():
        print(f"\n{thread}: {total} samples ({100 * total / grand:.0f} % of all)")
        shown = 0
        for key, count in per_thread[thread].most_common():
            if args.match and args.match not in key:
                continue
            print(f"  {100 * count / total:5.1f} %  {key}")
            shown += 1
            if shown >= args.top:
                break


if __name__ == "__main__":
    main()
