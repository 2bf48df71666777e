# The two commands in the README are `make run` and `make test`; both set up a virtualenv
# (.venv, or VENV=...) from the project's own files on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)
EXAMPLES := $(wildcard examples/*/pyproject.toml)
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench proto check-proto clean

$(STAMP): pyproject.toml requirements-dev.txt $(PLUGINS) $(EXAMPLES) scripts/bootstrap
	PYTHON=$(PYTHON) VENV=$(VENV) sh scripts/bootstrap
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/streamer run --demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check $(wildcard core tests plugins examples benchmarks scripts)
	$(BIN)/ruff format --check core

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf .venv .venv-* .pytest_cache .mypy_cache .ruff_cache build core/*.egg-info
