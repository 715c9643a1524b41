# Starling: the two commands of the README, and their parts.
#
#   make run    install, build the demo world from ../shared/data once, serve it on the embedded
#               default, replay the real Reddit threads live, print what to try (starling demo)
#   make test   install everything (redis-server, the Neo4j test server, Python packages)
#               and run lint, types and the whole test suite against real services
#   make chaos  the fault tests' long versions (tests/reliability/test_faults*.py): a minute of
#               traffic around each fault; figures in bench/results/reliability-*-long.json
#   make fuzz   the fuzz suite's long run (tests/fuzz): 40 times the cases CI draws, random
#   make cluster-test  Starling on several hosts (network namespaces, as root): host kills under load

PYTHON ?= python3
SOAK_MINUTES ?= 30
VENV   ?= .venv
DATA   ?= ../shared/data
BIN     = $(VENV)/bin

.PHONY: run test install install-test install-bench lint typecheck pytest bench-social bench-feeds bench-tools soak chaos fuzz cluster-test clean

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

# Two servers on one Redis under kill -9, a Redis restart, a Neo4j cut, injected actor crashes and a
# 10 s network cut to Redis, at a steady rate; CI runs the short versions (a few seconds each).
CHAOS_TESTS = tests/reliability/test_faults.py tests/reliability/test_faults_injected.py
chaos: install-test
	STARLING_CHAOS=long STARLING_CHAOS_RESULTS=bench/results \
		$(BIN)/python -m pytest $(CHAOS_TESTS) -s -o timeout=1800

# Garbage at every door (tests/fuzz; CI runs the "ci" profile, a fixed set of cases): STARLING_FUZZ=1
# picks the hypothesis "fuzz" profile (tests/fuzz/budget.py), random cases, what fails kept in
# .hypothesis/ and replayed first on the next run.
fuzz: install-test
	STARLING_FUZZ=1 $(BIN)/python -m pytest tests/fuzz -o timeout=3600

# Starling on several hosts (tests/hosts.py: a network namespace each, needs root): three servers,
# Redis (one server, then a Redis Cluster) and Neo4j on hosts of their own, clients on another;
# six host kills and restarts under a steady stream (STARLING_HOSTS=long, about five minutes of
# traffic per Redis). CI runs one kill (tests/test_hosts_failover.py). JSON in bench/results.
HOSTS_TESTS = tests/test_hosts.py tests/test_hosts_failover.py
cluster-test: install-test
	STARLING_HOSTS=long STARLING_CHAOS_RESULTS=bench/results \
		$(BIN)/python -m pytest $(HOSTS_TESTS) -s -o timeout=1800

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

# Issue 16: the realtime fanout on one machine, single Redis vs a private Redis Cluster
# (3 masters + 3 replicas, started per run by tests/services.py), runs interleaved; the
# cluster's extra server CPU per event (budget <= 20 %) in bench/results/realtime-cluster.json.
.PHONY: bench-cluster
bench-cluster: install-bench bench-tools
	$(BIN)/starling bench realtime --clients native --backend redis,redis-cluster \
		--rate 5k,11k --repeat 3 --output bench/results/realtime-cluster.json

# The soak: the demo world served by starling serve under a steady mixed load at half the
# knee for SOAK_MINUTES (30); RSS, fds, trio tasks, p99 and losses over time, judged
# (docs/benchmarks.md, "Soak"). Writes bench/results/soak.json and docs/images/soak.png.
soak: install-bench bench-tools
	$(BIN)/starling load demo --source $(DATA) --if-empty
	$(BIN)/starling bench soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) starling-data tests/neo4j_server/target
