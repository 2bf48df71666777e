# The two commands in the README are `make run` and `make test`; both set up a virtualenv
# (.venv, or VENV=...) from the project's own files on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)
EXAMPLES := $(wildcard examples/*/pyproject.toml)
STAMP := $(VENV)/.installed
# `make run` installs only what the demo runs: the core and the files, sqlite and log plugins.
RUNTIME := $(VENV)/.runtime

.PHONY: run test lint typecheck bench proto check-proto clean

$(RUNTIME): pyproject.toml $(PLUGINS) scripts/bootstrap
	@PYTHON=$(PYTHON) VENV=$(VENV) sh scripts/bootstrap runtime
	@touch $(RUNTIME)

$(STAMP): $(RUNTIME) requirements-dev.txt requirements-test.txt $(EXAMPLES)
	@PYTHON=$(PYTHON) VENV=$(VENV) sh scripts/bootstrap dev
	@touch $(STAMP)

run: $(RUNTIME)
	@$(BIN)/streamer run --demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard core tests plugins examples benchmarks scripts)
	$(BIN)/ruff format --check core
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf .venv .venv-* .pytest_cache .mypy_cache .ruff_cache build core/*.egg-info
