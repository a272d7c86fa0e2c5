# UnTrac runner. `make demo` runs the default job, `make test` the whole test suite;
# both create the virtual environment on first use. `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SCALE ?= cpu
LAUNCHER ?= basic

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast bench clean

help: ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 first, so the dependency resolution below keeps it.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its test tools

demo: $(STAMP) ## the default job: tiny T5, synthetic data A, UnTrac (≈2 min on 2 cores)
	$(PY) -m untrac.run

test: $(STAMP) ## every test, the slow end-to-end ones included
	$(PY) -m pytest -q

test-fast: $(STAMP) ## unit tests only
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP) ## timings of the stages and methods (not part of the tests)
	$(PY) scripts/bench.py

clean: ## remove outputs (results and cache)
	rm -rf outputs
