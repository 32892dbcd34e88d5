"""Cold start: ``import receiver.app`` + ``create_app()``, and the process's RSS then.

    .venv/bin/python bench/startup.py [--runs 7]

Each run is a fresh interpreter (what a serverless cold start or a Procfile dyno pays);
the baseline, alternating with it, is a bare starlette app built in a fresh interpreter.
Peak RSS under load is printed by bench/ingest.py and bench/deliver.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
from harness import print_table

RELAY = """
import json, resource, time
started = time.perf_counter()
import receiver.app
from receiver.settings import load_settings
imported = time.perf_counter()
receiver.app.create_app(load_settings())
built = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"import": imported - started, "total": built - started, "rss": rss}))
"""
BARE = """
import json, resource, time
started = time.perf_counter()
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
imported = time.perf_counter()
Starlette(routes=[Route("/", lambda request: JSONResponse({}))])
built = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"import": imported - started, "total": built - started, "rss": rss}))
"""


def run(code: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=harness.ROOT, capture_output=True, check=True
    )
    return dict(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"## startup: {args.runs} fresh interpreters each, {harness.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        config = harness.write_config(Path(tmp), "http://127.0.0.1:9")
        env = harness.relay_env(f"sqlite:///{tmp}/relay.db", config, "inprocess", 8000)
        env = {**env, "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "")}
        relay, bare = [], []
        run(RELAY, env)  # compile the bytecode once, as an installed package has it
        for _ in range(args.runs):
            relay.append(run(RELAY, env))
            bare.append(run(BARE, env))
    rows = []
    for name, runs in (("relay: import receiver.app + create_app()", relay), ("bare", bare)):
        rows.append(
            [
                name,
                f"{1000 * statistics.median(r['import'] for r in runs):.0f}",
                f"{1000 * statistics.median(r['total'] for r in runs):.0f}",
                f"{1000 * min(r['total'] for r in runs):.0f}",
                f"{max(r['rss'] for r in runs):.0f}",
            ]
        )
    headers = ["what", "import ms (median)", "+ create_app ms (median)", "best ms", "RSS MB"]
    print_table(headers, rows)
    print("target: import + create_app ≤ 300 ms; peak RSS ≤ 150 MB")


if __name__ == "__main__":
    main()
