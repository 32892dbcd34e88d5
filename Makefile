# upscale-relay: `make run` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit install clean bench chromium wrk

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/relay demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# the dashboard's browser test drives Debian's Chromium (never a Playwright download)
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# Tests wait mostly on sockets and subprocesses, so more workers than cores pays off:
# measured on 2 cores in the README's Development section. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 4

unit: $(STAMP) chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadgroup \
		--cov --cov-report=term

test: lint typecheck unit

# bench/ingest.py's load generator (wrk -t1 -c64 -d10s): the built-in Python one needs a
# core of its own on 2 cores and caps the bare baseline (README, Performance); installed only
# if missing, and the benchmarks fall back to the built-in one where it cannot be
wrk:
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk) || \
		echo "wrk not installed: bench/ingest.py uses its built-in generator"

bench: $(STAMP) wrk
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/deliver.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/store_ingest.py
	$(BIN)/python bench/app_cpu.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis relay.db* demo-events.jsonl
