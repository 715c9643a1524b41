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

# setuptools prints an information block ("Editable installation …") on every editable
# install of a flat layout; only that notice is silenced, deprecations still show.
PIP = PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip

install: $(BIN)/python
	$(PIP) install -q -e .

install-test: $(BIN)/python
	bash scripts/install-test-deps.sh
	$(PIP) install -q -e '.[test]' -e ./bench

# The benchmarks are a distribution of their own (bench/pyproject.toml), not in the wheel.
install-bench: install
	$(PIP) install -q -e ./bench

run: install
	$(BIN)/starling demo --source $(DATA)

# lint-imports checks the dependency rules of .importlinter (docs/architecture.md).
lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

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

# The native load generators: the realtime benchmark's (starling bench realtime --clients native)
# and the one of JSON-RPC calls pipelined over the WebSocket (bench/rpc_native.py).
bench-tools:
	@command -v go >/dev/null || { echo "bench-tools needs Go >= 1.22: apt-get install golang-go (or https://go.dev/dl/)"; exit 1; }
	cd bench/loadgen && go build -o starling-loadgen ./...
	cd bench/rpcload && go build -o starling-rpcload .

clean:
	rm -rf $(VENV) starling-data tests/neo4j_server/target
