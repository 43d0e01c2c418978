# The two commands of the README: `make up` runs the stack, `make test` runs every check.
# `make bench` runs the benchmark suite and rewrites BENCHMARKS.md; `make soak` runs the stream
# soak (RATE events/s for DURATION s with AGGREGATORS aggregator and INGEST ingest processes;
# KILL=1 SIGKILLs one of each halfway and starts it again) and rewrites SOAK.md;
# `make profile` shows where CPU goes at maximum stream rate; `make faults` runs the fault matrix
# (each fault on a stack of its own under load, totals verified) and rewrites FAULTS.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
NODE_SDK := tests/sdk/node

.PHONY: up test bench soak profile faults install lint typecheck unit integration clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "meterflow needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# The bench extra (matplotlib, for the plots) on top of the test install.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	rm -f $(VENV)/.bench-installed-*
	touch $@

up: install
	$(BIN)/meterflow up

$(NODE_SDK)/node_modules/.package-lock.json: $(NODE_SDK)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(NODE_SDK) --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Node SDK test will be skipped"; fi

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

test: install lint typecheck $(NODE_SDK)/node_modules/.package-lock.json
	$(BIN)/pytest --junitxml=build/test-results.xml

bench: $(BENCH_STAMP)
	$(BIN)/python -m loadtest.bench

RATE ?= 20000
DURATION ?= 300
AGGREGATORS ?= 1
INGEST ?= 1
KILL ?=
soak: $(BENCH_STAMP)
	$(BIN)/python -m loadtest.bench.soak --rate $(RATE) --duration $(DURATION) \
		--aggregators $(AGGREGATORS) --ingest $(INGEST) $(if $(KILL),--kill)

FOLD ?=
profile: $(BENCH_STAMP)
	$(BIN)/python -m loadtest.bench.profile $(if $(FOLD),--fold $(FOLD))

faults: install
	$(BIN)/python -m loadtest.faults

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache $(NODE_SDK)/node_modules
