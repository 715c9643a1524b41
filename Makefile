# Starling: the two commands of the README, and their parts.
#
#   make run    install, build the demo world from ../shared/data once, serve it on the embedded
#               default, replay the real Reddit threads live, print what to try (starling demo)
#   make test   install everything (redis-server, the Neo4j test server, Python packages)
#               and run lint, types and the whole test suite against real services

PYTHON ?= python3
VENV   ?= .venv
DATA   ?= ../shared/data
BIN     = $(VENV)/bin

.PHONY: run test install install-test install-bench lint typecheck pytest bench-social bench-feeds bench-tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

install-test: $(BIN)/python
	bash scripts/install-test-deps.sh
	$(BIN)/python -m pip install -q -e '.[test]' -e ./bench

# The benchmarks are a distribution of their own (bench/pyproject.toml), not in the wheel.
install-bench: install
	$(BIN)/python -m pip install -q -e ./bench

run: install
	$(BIN)/starling demo --source $(DATA)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/python -m pytest

test: install-test lint typecheck pytest

bench-social: install-bench
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/starling load demo --source $(DATA) --if-empty
	$(BIN)/starling bench social

bench-feeds: install-bench
	$(BIN)/starling bench feeds --source $(DATA)

# The realtime benchmark's native load generator (starling bench realtime --clients native).
bench-tools:
	@command -v go >/dev/null || { echo "bench-tools needs Go >= 1.22: apt-get install golang-go (or https://go.dev/dl/)"; exit 1; }
	cd bench/loadgen && go build -o starling-loadgen ./...

clean:
	rm -rf $(VENV) starling-data tests/neo4j_server/target
