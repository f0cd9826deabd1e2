# Two commands on a fresh machine (Python 3.11+, Node.js 18+):
#   make run    install everything, start Azurite + ARM simulator + local Functions host, print a request
#   make test   install everything (and Chromium, tools/ensure_chromium.sh), lint, run every test (starts Azurite,
#               simulator and host itself)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint unit chromium bench bench-scale chaos infra-check clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json $(wildcard patches/*.patch)
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: setup
	$(BIN)/python -m tools.dev

# ruff; the layer rule (import-linter contract in pyproject.toml); mypy --strict on shared/ and tools/azure_simulator/
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# Before anything else: the dashboard's browser test needs Debian's Chromium. Installed with apt-get when we are
# root or have passwordless sudo; otherwise make stops here with one line saying what to install.
chromium:
	@tools/ensure_chromium.sh

test: chromium lint
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest tests/unit

# Offline: every .bicep parses, checkov passes, app settings match the code. With the Azure CLI, also compile.
infra-check: setup
	$(BIN)/python -m pytest tests/infra
	@if command -v az >/dev/null 2>&1; then az bicep build --file infra/main.bicep --stdout >/dev/null && echo "az bicep build: ok"; \
	else echo "az not found: skipped az bicep build (the offline checks above ran)"; fi

bench: setup
	$(BIN)/python -m benchmarks.accept_run
	$(BIN)/python -m benchmarks.run_costs
	$(BIN)/python -m benchmarks.assessment_costs
	$(BIN)/python -m benchmarks.dashboard_reads
	$(BIN)/python -m benchmarks.health_costs
	$(BIN)/python -m benchmarks.azurite_queues
	$(BIN)/python -m benchmarks.table_transactions

# The full reliability run (issue #15): endpoint fuzzing, host kills and an Azurite restart mid-run, ARM faults.
# Prints a table; bounded (about 30 min today: recovery waits out the 10-min message lease and the sweeper).
# The fast subset runs in `make test` (tests/reliability). Replay with CHAOS_SEED=<seed printed>.
chaos: setup
	$(BIN)/python -m benchmarks.chaos

# Fleet scale (issue #14): PatchPilot vs the SDK script on the simulator, Azure's budgets on a 2x clock:
# 10,000 VMs in one subscription, then over four (about an hour on 2 cores). BENCH_SCALE_ARGS=--quick: a minute.
# Longest first (issue #21): BENCH_SCALE_ARGS="--scenarios longest --subscriptions 1" patches the one-subscription
# fleet twice on the same tables, request order then longest first from its history, and prints each makespan
# against the clairvoyant bound (about 75 minutes at 10,000 VMs; add --machines 300 --scale 20 for two minutes).
bench-scale: setup
	$(BIN)/python -m benchmarks.scale $(BENCH_SCALE_ARGS)

clean:
	rm -rf $(VENV) node_modules .azurite .pytest_cache .ruff_cache
