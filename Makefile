# Siaga 112 PBX. Two commands matter (see README.md):
#   make run    start the lab stack: Asterisk 22, PostgreSQL, the service
#   make test   provision everything and run the full suite
# Both do all their own setup and are safe to run again.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit e2e deps venv asterisk postgres lab-stop clean

$(STAMP): pyproject.toml
	@scripts/system-deps.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

deps: $(STAMP)
	@scripts/provision-asterisk.sh
	@scripts/postgres.sh siaga

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# The suite drives one Asterisk test instance on fixed ports: one run at a time.
test: deps lint
	flock /tmp/siaga-e2e.lock $(BIN)/pytest -q -p no:cacheprovider

run: deps
	@scripts/asterisk-instance.sh start lab
	$(BIN)/siaga-pbx migrate
	$(BIN)/siaga-pbx run

lab-stop:
	@scripts/asterisk-instance.sh stop lab

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# ---- benchmark (docs/PERFORMANCE.md): Queue() vs siaga_pbx on the bench Asterisk profile.
# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS='--calls 5:100,50:3000'.
.PHONY: bench
bench: deps
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[bench]'
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install -q 'matplotlib>=3.8'
	$(BIN)/python -m bench $(BENCH_ARGS)

# ---- soak (docs/FAILURES.md): SOAK_CALLS calls through the whole stack with random
# abandon, no-answer and hang-up order; audits leaks, lost/duplicate incidents, RSS.
# `make test` runs the same test with 60 calls (tests/soak/test_soak_short.py).
SOAK_CALLS ?= 2000
.PHONY: soak
soak: deps
	SIAGA_SOAK_CALLS=$(SOAK_CALLS) flock /tmp/siaga-e2e.lock \
		$(BIN)/pytest tests/soak -q -s -p no:cacheprovider -o timeout=$$(( $(SOAK_CALLS) + 900 ))
